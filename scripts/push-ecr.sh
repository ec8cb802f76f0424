#!/usr/bin/env bash
# Push local images to REGISTRY, or to ECR resolved from the AWS account and region.
#   scripts/push-ecr.sh [--registry HOST[:PORT]] [--region R] [--compression zstd|gzip]
#                       [--force] [--dry-run] IMAGE[:TAG] ...
#   REGISTRY / --registry  push there (no login unless REGISTRY_USER/REGISTRY_PASSWORD are set)
#   otherwise              ECR: <account>.dkr.ecr.<region>.amazonaws.com, account from STS,
#                          region from --region / AWS_REGION / AWS_DEFAULT_REGION / the profile,
#                          login with a token from the ECR API (python -m dsjob_infra.ecr); the
#                          repository is the RepositoryName output of ENV's (default dev)
#                          repository stack, else the image name; it must exist
#   --compression C        layer compression (PUSH_COMPRESSION, default zstd: smaller, and
#                          faster to unpack on every Fargate start); podman only
#   --force                push even when the git tree has uncommitted changes
#   --dry-run              print the engine commands (the ECR lookup still runs)
# Engine: CONTAINER_ENGINE, else as scripts/lib/container-engine.sh decides. A podman
# manifest list (multi-platform build) is pushed with all its images.
# Prints each pushed reference on stdout.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/lib/common.sh"

root=$DSJOB_ROOT
registry=${REGISTRY:-}
region=""
force=0
dry_run=0
compression=${PUSH_COMPRESSION:-zstd}
images=()
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) registry=${2:?--registry needs a value}; shift 2 ;;
    --registry=*) registry=${1#*=}; shift ;;
    --region) region=${2:?--region needs a value}; shift 2 ;;
    --region=*) region=${1#*=}; shift ;;
    --compression) compression=${2:?--compression needs a value}; shift 2 ;;
    --compression=*) compression=${1#*=}; shift ;;
    --force) force=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    *) images+=("$1"); shift ;;
  esac
done
[ "${#images[@]}" -gt 0 ] || { echo "no image given" >&2; usage >&2; exit 2; }
case "$compression" in
  zstd|gzip) ;;
  *) echo "unknown --compression: $compression (zstd or gzip)" >&2; exit 2 ;;
esac

# An image pushed from a dirty tree carries a revision label that does not describe it.
if [ "$force" = 0 ]; then
  if ! git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    echo "not a git checkout: cannot tell what is being pushed (use --force)" >&2
    exit 1
  fi
  dirty=$(git -C "$root" status --porcelain --untracked-files=normal)
  if [ -n "$dirty" ]; then
    echo "refusing to push: the git tree has uncommitted changes (commit them, or use --force):" >&2
    echo "$dirty" | head -20 >&2
    exit 1
  fi
fi

# shellcheck source=scripts/lib/container-engine.sh
. "$root/scripts/lib/container-engine.sh"
engine=$(container_engine)

show() { printf '%q ' "$@" | sed 's/ $//'; echo; }
run() {
  if [ "$dry_run" = 1 ]; then show "$@" >&2; else "$@"; fi
}

if [ -n "$registry" ]; then
  if [ -n "${REGISTRY_USER:-}" ]; then
    if [ "$dry_run" = 1 ]; then
      show "$engine" login --username "$REGISTRY_USER" --password-stdin "$registry" >&2
    else
      printf '%s' "${REGISTRY_PASSWORD:?REGISTRY_PASSWORD is required with REGISTRY_USER}" \
        | "$engine" login --username "$REGISTRY_USER" --password-stdin "$registry" >&2
    fi
  fi
else
  py=${PYTHON:-$root/.venv/bin/python}
  [ -x "$py" ] || { echo "$py not found: run 'make setup' (boto3 resolves the ECR registry)" >&2; exit 1; }
  # Line 1 the registry, line 2 the login password, then the ECR target of each image
  # (its repository: the environment's repository stack output, see dsjob_infra/ecr.py).
  mapfile -t resolved < <(PYTHONPATH="$root/infra" "$py" -m dsjob_infra.ecr \
    --region "$region" --env "${ENV:-dev}" login "${images[@]}"; echo "rc=$?")
  [ "${resolved[-1]}" = rc=0 ] || exit 1
  registry=${resolved[0]}
  password=${resolved[1]}
  targets=("${resolved[@]:2:${#images[@]}}")
  if [ "$dry_run" = 1 ]; then
    show "$engine" login --username AWS --password-stdin "$registry" >&2
  else
    printf '%s' "$password" | "$engine" login --username AWS --password-stdin "$registry" >&2
  fi
fi

# A registry on loopback speaks plain HTTP (test and air-gapped setups); docker already
# treats 127.0.0.0/8 as insecure, podman needs to be told.
tls=()
if [ "$(basename "$engine")" = podman ]; then
  case "$registry" in localhost|localhost:*|127.*) tls=(--tls-verify=false) ;; esac
fi

# Layer compression. ECR stores zstd layers and Fargate (platform 1.4) pulls them; zstd
# unpacks faster than gzip, and Fargate unpacks the whole image on every task start
# ("Reducing AWS Fargate Startup Times with zstd Compressed Container Images", AWS
# Containers blog; ECS developer guide, "Fargate pull behavior": alternative compression).
# podman: --compression-format; from 4.6 on it reuses an already-compressed (gzip) copy
# of a layer unless --force-compression is given too (older versions have no such flag
# and compress from local storage). docker push has no compression option: it sends
# the layers as built (gzip); zstd needs buildx at build time
# (--output type=image,compression=zstd,force-compression=true,push=true).
compress=()
if [ "$(basename "$engine")" = podman ]; then
  compress=(--compression-format "$compression")
  if "$engine" push --help 2>/dev/null | grep -q -- '--force-compression'; then
    compress+=(--force-compression)
  fi
elif [ "$compression" != gzip ]; then
  echo "note: $(basename "$engine") push sends layers as built (gzip); zstd needs buildx at build time" >&2
fi

for index in "${!images[@]}"; do
  image=${images[$index]}
  # Local name without a registry prefix podman adds (localhost/) or one given.
  local_ref=$image
  remote=${targets[$index]:-$registry/${image#localhost/}}
  is_manifest=0
  if [ "$(basename "$engine")" = podman ] && "$engine" manifest inspect "$local_ref" >/dev/null 2>&1; then
    is_manifest=1
  fi
  if [ "$is_manifest" = 1 ]; then
    run "$engine" manifest push "${tls[@]}" "${compress[@]}" --all "$local_ref" "docker://$remote" >&2
  else
    run "$engine" tag "$local_ref" "$remote"
    run "$engine" push "${tls[@]}" "${compress[@]}" "$remote" >&2
  fi
  echo "$remote"
done
