#!/usr/bin/env bash
# Pin config/versions.conf's BASE_IMAGE to the digest its tag has on the registry now.
#   scripts/pin-base.sh            resolve and rewrite BASE_IMAGE=name:tag@sha256:...
#   scripts/pin-base.sh --check    print the pinned and the current digest, change nothing
# Needs the registry: where none is reachable (an air-gapped CI that bootstraps its own
# base, see scripts/bootstrap-base-image.sh) it says so and leaves the pin as it is.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
# shellcheck source=scripts/lib/container-engine.sh
. "$DSJOB_ROOT/scripts/lib/container-engine.sh"
check=0
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --check) check=1 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac
load_versions
conf=$DSJOB_ROOT/config/versions.conf
reference=${BASE_IMAGE%%@*}
pinned=${BASE_IMAGE#"$reference"}
pinned=${pinned#@}

# The digest of the tag's manifest (list): what `FROM name:tag@digest` resolves.
current=""
engine=$(container_engine)
if command -v skopeo >/dev/null 2>&1; then
  current=$(skopeo inspect --format '{{.Digest}}' "docker://$reference" 2>/dev/null) || current=""
elif [ "$(basename "$engine")" = docker ]; then
  current=$(docker buildx imagetools inspect --format '{{.Manifest.Digest}}' "$reference" 2>/dev/null) || current=""
else
  current=$("$engine" pull --quiet "$reference" >/dev/null 2>&1 \
    && "$engine" image inspect --format '{{.Digest}}' "$reference" 2>/dev/null) || current=""
fi
if [ -z "$current" ]; then
  echo "pin-base: no registry answers for $reference from this machine; the pin stays ${pinned:-unset}." >&2
  echo "pin-base: run 'make pin-base' where the registry is reachable." >&2
  exit 1
fi
echo "pinned:  ${pinned:-none}"
echo "current: $current"
[ "$check" = 1 ] && exit 0
sed -i "s|^BASE_IMAGE=.*$|BASE_IMAGE=$reference@$current|" "$conf"
echo "config/versions.conf: BASE_IMAGE=$reference@$current" >&2
