#!/usr/bin/env bash
# Build the dsjob images (docker/Dockerfile) with docker or podman, tag and size them.
#   scripts/build-ml-container.sh [--target dev|production] [--slim] [--with-ml]
#       [--platform P ...] [--tag TAG ...] [--base-image IMG] [--push] [--no-cache] [--dry-run]
#   --target T        dev (default), production (alias: prod) or lambda (prod + awslambdaric)
#   --slim            dev without JupyterLab and ML extras (requirements-dev-slim.lock)
#   --with-ml         production with the ml extra (requirements-ml.lock)
#   --platform P      repeatable or comma-separated (linux/amd64,linux/arm64): buildx / podman manifest;
#                     production and lambda default to $PLATFORM, else linux/amd64 (the ECS
#                     task's CpuArchitecture X86_64; ARM64 is linux/arm64)
#   --tag TAG         extra tag, repeatable (NAME:TAG, or just TAG under IMAGE_NAME)
#   --base-image IMG  base image (also env BASE_IMAGE; default from config/versions.conf)
#   --push            push to REGISTRY, or ECR resolved from the AWS account/region (scripts/push-ecr.sh)
#   --push-force      push even with uncommitted changes (passed to push-ecr.sh as --force)
#   --no-cache        build without the layer cache
#   --dry-run         print the engine commands instead of running them
# Engine: CONTAINER_ENGINE, else as scripts/lib/container-engine.sh decides. Tags:
# IMAGE_NAME:<version>-<git sha>[-flavour] plus the moving tag IMAGE_NAME:dev|dev-slim|prod|prod-ml.
# VCS_REF (env) overrides the commit recorded in the image, for a context that is a copy
# of a checkout (outside git): the same commit then reuses the checkout's cached layers.
# Progress goes to stderr; the last line on stdout is the versioned image reference.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/lib/common.sh"

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
load_versions BASE_IMAGE IMAGE_NAME
# shellcheck disable=SC2153  # both set by load_versions
base_image=$BASE_IMAGE image_name=$IMAGE_NAME

target=dev
slim=0
with_ml=0
push=0
push_force=0
no_cache=0
dry_run=0
platforms=()
extra_tags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target=${2:?--target needs a value}; shift 2 ;;
    --target=*) target=${1#*=}; shift ;;
    --slim) slim=1; shift ;;
    --with-ml) with_ml=1; shift ;;
    --platform) IFS=, read -r -a p <<<"${2:?--platform needs a value}"; platforms+=("${p[@]}"); shift 2 ;;
    --platform=*) IFS=, read -r -a p <<<"${1#*=}"; platforms+=("${p[@]}"); shift ;;
    --tag) extra_tags+=("${2:?--tag needs a value}"); shift 2 ;;
    --tag=*) extra_tags+=("${1#*=}"); shift ;;
    --base-image) base_image=${2:?--base-image needs a value}; shift 2 ;;
    --base-image=*) base_image=${1#*=}; shift ;;
    --push) push=1; shift ;;
    --push-force) push=1; push_force=1; shift ;;
    --no-cache) no_cache=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

case "$target" in
  dev) stage=dev ;;
  production|prod) target=production; stage=prod ;;
  lambda) stage=lambda ;;
  *) echo "--target must be dev, production or lambda, not '$target'" >&2; exit 2 ;;
esac
if [ "$slim" = 1 ] && [ "$stage" != dev ]; then echo "--slim applies to --target dev" >&2; exit 2; fi
if [ "$stage" != dev ] && [ "${#platforms[@]}" -eq 0 ]; then
  # The image must run on the task's CPU: an arm64 laptop would otherwise build arm64.
  platforms=("${PLATFORM:-linux/amd64}")
fi
if [ "$with_ml" = 1 ] && [ "$stage" != prod ]; then echo "--with-ml applies to --target production" >&2; exit 2; fi

# shellcheck source=scripts/lib/container-engine.sh
. "$root/scripts/lib/container-engine.sh"
engine=$(container_engine)
engine_name=$(basename "$engine")

version=$(project_version)
sha=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
revision=${VCS_REF:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
source_url=${SOURCE_URL:-$(git remote get-url origin 2>/dev/null || echo unknown)}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

flavour=""
moving=prod
prod_lock=requirements.lock
dev_lock=requirements-dev.lock
if [ "$stage" = dev ]; then
  flavour=-dev; moving=dev
  if [ "$slim" = 1 ]; then flavour=-dev-slim; moving=dev-slim; dev_lock=requirements-dev-slim.lock; fi
elif [ "$stage" = lambda ]; then
  flavour=-lambda; moving=lambda
elif [ "$with_ml" = 1 ]; then
  flavour=-ml; moving=prod-ml; prod_lock=requirements-ml.lock
fi
versioned="$image_name:$version-$sha$flavour"
tags=("$versioned" "$image_name:$moving")
# Pushed: the versioned tag and explicit --tag values, never the moving tag. ECR
# repositories keep tags immutable, so re-pushing ":prod" would fail the second time.
push_tags=("$versioned")
for t in "${extra_tags[@]}"; do
  case "$t" in *:*) t_full=$t ;; *) t_full=$image_name:$t ;; esac
  tags+=("$t_full")
  push_tags+=("$t_full")
done

cmd=("$engine")
multi=0
[ "${#platforms[@]}" -gt 1 ] && multi=1
if [ "$engine_name" = docker ]; then
  cmd+=(buildx build)
  # A multi-platform result cannot be loaded into the local image store: push it.
  if [ "$multi" = 1 ]; then
    [ "$push" = 1 ] || { echo "docker: more than one --platform needs --push" >&2; exit 2; }
  else
    cmd+=(--load)
  fi
else
  cmd+=(build)
  # podman's default OCI format drops HEALTHCHECK; docker format keeps it.
  cmd+=(--format docker)
fi
cmd+=(--file docker/Dockerfile --target "$stage")
cmd+=(--build-arg "BASE_IMAGE=$base_image")
cmd+=(--build-arg "UV_VERSION=$UV_VERSION")
cmd+=(--build-arg "DUCKDB_CLI_VERSION=$DUCKDB_CLI_VERSION")
cmd+=(--build-arg "PROD_LOCK=$prod_lock" --build-arg "DEV_LOCK=$dev_lock")
# The version names the SBOM's subject; it changes only with a release.
cmd+=(--build-arg "VERSION=$version")
cmd+=(--build-arg "VCS_REF=$revision")
# The OCI labels are set here only, not in the Dockerfile: buildah reuses a cached
# LABEL step even when the build args it expands changed, --label always lands.
cmd+=(--label "org.opencontainers.image.created=$build_date")
cmd+=(--label "org.opencontainers.image.revision=$revision")
cmd+=(--label "org.opencontainers.image.version=$version")
cmd+=(--label "org.opencontainers.image.source=$source_url")
cmd+=(--label "org.opencontainers.image.title=$image_name$flavour")
[ -n "${PYTHON:-}" ] && cmd+=(--build-arg "PYTHON=$PYTHON")
# A private index or PyPI mirror configured on this machine is used inside the build too.
index_url=${UV_DEFAULT_INDEX:-${UV_INDEX_URL:-${PIP_INDEX_URL:-}}}
[ -n "$index_url" ] && cmd+=(--build-arg "INDEX_URL=$index_url")
# The CA bundle (corporate proxy, egress interception) as a build secret: only the
# RUN steps that download mount it, and it never lands in a layer.
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -f "$ca_bundle" ] && cmd+=(--secret "id=ca,src=$ca_bundle")
[ "$no_cache" = 1 ] && cmd+=(--no-cache)
if [ "${#platforms[@]}" -gt 0 ]; then
  platform_list=$(IFS=,; echo "${platforms[*]}")
  cmd+=(--platform "$platform_list")
fi
if [ "$engine_name" != docker ] && [ "$multi" = 1 ]; then
  # podman: one manifest list holding an image per platform.
  cmd+=(--manifest "$versioned")
else
  for t in "${tags[@]}"; do cmd+=(--tag "$t"); done
fi
if [ "$engine_name" = docker ] && [ "$push" = 1 ] && [ "$multi" = 1 ]; then
  registry=${REGISTRY:?docker multi-platform push needs REGISTRY (buildx pushes while building)}
  cmd+=(--push)
  for t in "${push_tags[@]}"; do cmd+=(--tag "$registry/$t"); done
fi
cmd+=(.)

show() { printf '%q ' "$@" | sed 's/ $//'; echo; }

if [ "$dry_run" = 1 ]; then
  show "${cmd[@]}"
  if [ "$engine_name" != docker ] && [ "$multi" = 1 ]; then
    for t in "${tags[@]:1}"; do show "$engine" tag "$versioned" "$t"; done
  fi
  if [ "$push" = 1 ] && ! { [ "$engine_name" = docker ] && [ "$multi" = 1 ]; }; then
    push_args=(--dry-run)
    [ "$push_force" = 1 ] && push_args+=(--force)
    CONTAINER_ENGINE=$engine "$root/scripts/push-ecr.sh" "${push_args[@]}" "${push_tags[@]}"
  fi
  echo "$versioned"
  exit 0
fi

# A digest-pinned base must be the image that was built on; a base bootstrapped on this
# machine (localhost/...) has no registry digest to compare, and says so.
base_note=""
case "$base_image" in
  localhost/*) base_note="base $base_image was bootstrapped on this machine: exempt from the digest pin check" ;;
  *@sha256:*) ;;
  *) base_note="base $base_image is not pinned by digest (make pin-base)" ;;
esac
[ -n "$base_note" ] && echo "$base_note" >&2
echo "building $versioned (target $stage, base $base_image, engine $engine_name)" >&2
start=$(date +%s)
deps_stage=""
case "$stage" in dev) deps_stage=dev-deps ;; prod) deps_stage=prod-deps ;; esac
if [ "$engine_name" != docker ] && [ "$multi" = 0 ] && [ -n "$deps_stage" ]; then
  # Two builds with podman: the dependency stage, tagged by a digest of everything it is
  # built from (skipped when that image exists), then the final stage FROM that image.
  # On a rebuild after a source change buildah then walks only the final stage instead of
  # checking every cached step of system-base, builder and the deps stage (each COPY
  # re-hashed): about 10 s of a 25 s dev rebuild at load 9. The tag is named by content
  # only (dsjob-deps:dev-deps-<digest>), so builds under another IMAGE_NAME share it. It
  # keeps old dependency images from dangling: `podman rmi dsjob-deps:<tag>` frees them.
  deps_cmd=() key_args=()
  i=0
  while [ "$i" -lt "${#cmd[@]}" ]; do
    a=${cmd[$i]} b=${cmd[$((i + 1))]:-}
    case "$a" in
      --label|--tag) i=$((i + 2)); continue ;;
      --target) deps_cmd+=(--target "$deps_stage"); i=$((i + 2)); continue ;;
      --build-arg|--platform)
        case "$b" in VCS_REF=*) i=$((i + 2)); continue ;; esac
        key_args+=("$a" "$b") ;;
    esac
    deps_cmd+=("$a"); i=$((i + 1))
  done
  base_id=$("$engine" image inspect --format '{{.Id}}' "$base_image" 2>/dev/null || echo "$base_image")
  # Any file a dependency stage copies or runs, every lock, the Dockerfile and the args.
  key=$( { printf '%s\n' "$base_id" "${key_args[@]}"
           find docker config/versions.conf requirements*.lock -type f | LC_ALL=C sort | xargs sha256sum
         } | sha256sum | cut -c1-16)
  deps_ref="dsjob-deps:$deps_stage-$key"
  # The prod stage bind-mounts the builder stage (uv) while installing the project: it
  # gets its own tag too, or the final build would walk system-base and builder again and
  # podman 4.3 may pick an older equivalent chain of them (it takes the oldest cached one).
  builder_ref="dsjob-deps:builder-$key"
  unset 'deps_cmd[${#deps_cmd[@]}-1]'  # the context, after the tag
  if [ "$no_cache" = 0 ] && "$engine" image exists "$deps_ref" \
     && { [ "$stage" != prod ] || "$engine" image exists "$builder_ref"; }; then
    echo "dependency image $deps_ref is up to date: building only the $stage stage on it" >&2
  else
    if [ "$stage" = prod ]; then
      "${deps_cmd[@]/#$deps_stage/builder}" --tag "$builder_ref" . >&2
    fi
    "${deps_cmd[@]}" --tag "$deps_ref" . >&2
  fi
  deps_id=$("$engine" image inspect --format '{{.Id}}' "$deps_ref")
  mount_from=builder
  [ "$stage" = prod ] && mount_from=$("$engine" image inspect --format '{{.Id}}' "$builder_ref")
  split_file=$(mktemp "${TMPDIR:-/tmp}/dsjob-dockerfile.XXXXXX")
  trap 'rm -f "$split_file"' EXIT
  from="FROM $deps_stage AS $stage"
  [ "$(grep -cx "$from" docker/Dockerfile)" = 1 ] || { echo "docker/Dockerfile: no single '$from'" >&2; exit 1; }
  sed -e "s|^$from\$|FROM $deps_id AS $stage|" -e "s|from=builder,|from=$mount_from,|g" \
    docker/Dockerfile >"$split_file"
  for i in "${!cmd[@]}"; do
    [ "${cmd[$i]}" = docker/Dockerfile ] && cmd[i]=$split_file
  done
  cmd=("${cmd[@]:0:${#cmd[@]}-1}" --ignorefile .dockerignore .)
fi
"${cmd[@]}" >&2
elapsed=$(( $(date +%s) - start ))
if [ "$engine_name" != docker ] && [ "$multi" = 1 ]; then
  for t in "${tags[@]:1}"; do "$engine" tag "$versioned" "$t" >&2; done
fi

case "$base_image" in
  localhost/*) ;;
  *@sha256:*)
    want=${base_image##*@}
    have=$("$engine" image inspect --format '{{.Digest}} {{range .RepoDigests}}{{.}} {{end}}' "$base_image" 2>/dev/null || true)
    case " $have " in
      *"$want"*) echo "base digest $want verified" >&2 ;;
      *) echo "base $base_image: the image built on has digest(s) '${have:-none}', not $want" >&2; exit 1 ;;
    esac ;;
esac
if [ "$multi" = 0 ]; then
  size=$("$engine" image inspect --format '{{.Size}}' "$versioned")
  echo "built $versioned in ${elapsed} s; image size: $(( size / 1000000 )) MB ($size bytes)" >&2
else
  echo "built $versioned for ${platform_list} in ${elapsed} s" >&2
fi

if [ "$push" = 1 ] && ! { [ "$engine_name" = docker ] && [ "$multi" = 1 ]; }; then
  push_args=()
  [ "$push_force" = 1 ] && push_args+=(--force)
  CONTAINER_ENGINE=$engine "$root/scripts/push-ecr.sh" "${push_args[@]}" "${push_tags[@]}" >&2
fi
echo "$versioned"
