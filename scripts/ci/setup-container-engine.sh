#!/usr/bin/env bash
# Install and configure podman + buildah for machines with no Docker daemon (idempotent).
#   scripts/ci/setup-container-engine.sh
# Skips everything when a Docker daemon answers. Otherwise installs podman and buildah
# from Debian and writes /etc/containers/{containers,storage,registries}.conf:
# runc + cgroupfs (crun fails on cgroup v1 hybrid, there is no systemd), no default
# ulimits (podman would raise NOFILE above the machine's hard limit), docker image
# format (OCI drops HEALTHCHECK), overlay storage (3x faster than vfs), and a plain
# HTTP registry on loopback port 5000 for the push tests.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

if command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; then
  echo "a Docker daemon answers: nothing to set up" >&2
  exit 0
fi

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

# dnsname: compose service names resolve on podman's CNI networks (compose.yaml).
packages=(podman buildah runc uidmap debootstrap golang-github-containernetworking-plugin-dnsname)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# write_if_changed FILE: replace FILE with stdin only when the content differs.
write_if_changed() {
  local file=$1 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    return 0
  fi
  "${sudo[@]}" mkdir -p "$(dirname "$file")"
  "${sudo[@]}" install -m 0644 "$tmp" "$file"
  rm -f "$tmp"
  echo "wrote $file" >&2
}

write_if_changed /etc/containers/containers.conf <<'CONF'
# Written by dsjob scripts/ci/setup-container-engine.sh
[containers]
# podman otherwise raises NOFILE/NPROC above this machine's hard limit.
default_ulimits = []

[engine]
# crun fails on cgroup v1 hybrid hosts; there is no systemd to manage cgroups.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
# The OCI image format drops HEALTHCHECK; keep docker format.
env = ["BUILDAH_FORMAT=docker"]
CONF

# Overlay builds about 3x faster than vfs. An existing vfs graphroot refuses
# overlay ("database configuration mismatch"), so keep it only if it is overlay.
graphroot=/var/lib/containers/storage
if [ -f "$graphroot/libpod/bolt_state.db" ] || [ -d "$graphroot/vfs" ]; then
  if [ -d "$graphroot/vfs" ] && [ ! -d "$graphroot/overlay" ]; then
    graphroot=/var/lib/containers/storage-overlay
  fi
fi
write_if_changed /etc/containers/storage.conf <<CONF
# Written by dsjob scripts/ci/setup-container-engine.sh
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "$graphroot"
CONF

write_if_changed /etc/containers/registries.conf <<'CONF'
# Written by dsjob scripts/ci/setup-container-engine.sh
# No registry is reachable here except a local one on loopback (tests).
unqualified-search-registries = []

[[registry]]
location = "localhost:5000"
insecure = true

[[registry]]
location = "127.0.0.1:5000"
insecure = true
CONF

podman --version >&2
podman info --format '{{.Store.GraphDriverName}} {{.Host.OCIRuntime.Name}}' >&2
