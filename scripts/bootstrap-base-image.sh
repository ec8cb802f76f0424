#!/usr/bin/env bash
# Build a Debian base image from Debian packages (debootstrap minbase -> podman import).
#   scripts/bootstrap-base-image.sh [--suite SUITE] [--tag TAG] [--force]
# For machines that cannot pull from a registry (our CI, air-gapped users). The
# apt mirror is read from this machine's apt sources, never hard-coded. Prints the
# image tag as its last line, so this works:
#   make ml-build BASE_IMAGE=$(scripts/bootstrap-base-image.sh | tail -1)
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/lib/common.sh"

cd "$(dirname "$0")/.."
load_versions
suite=${DEBIAN_SUITE:-bookworm}
tag=""
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) suite=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
tag=${tag:-localhost/debian:$suite-slim}
# shellcheck source=scripts/lib/container-engine.sh
. scripts/lib/container-engine.sh
engine=$(container_engine)

if [ "$force" -eq 0 ] && "$engine" image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag already present (use --force to rebuild)" >&2
  echo "$tag"
  exit 0
fi

command -v debootstrap >/dev/null || { echo "debootstrap is not installed (scripts/ci/setup-container-engine.sh installs it)" >&2; exit 1; }

# The mirror this machine already uses: deb822 sources first, then the classic list.
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1=="deb" && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "no Debian mirror found in the apt sources; set DEBIAN_MIRROR" >&2; exit 1; }

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
work=$(mktemp -d)
trap '"${sudo[@]}" rm -rf "$work"' EXIT
rootfs=$work/rootfs

echo "debootstrap --variant=minbase $suite from $mirror" >&2
start=$(date +%s)
"${sudo[@]}" debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >&2
# apt sources inside the image, so apt-get in the Dockerfile works: the host's own
# (with its security suite) when it runs the same release, else main + updates.
host_suite=$(awk -F= '$1 == "VERSION_CODENAME" {print $2}' /etc/os-release 2>/dev/null || true)
if [ "$host_suite" = "$suite" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
  "${sudo[@]}" rm -f "$rootfs/etc/apt/sources.list"
  "${sudo[@]}" cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
else
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" \
    | "${sudo[@]}" tee "$rootfs/etc/apt/sources.list" >/dev/null
fi
# Slim like Debian's official container images: no docs, man pages or translations
# (now or from later apt installs), no apt package caches left in layers.
"${sudo[@]}" tee "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" >/dev/null <<'CONF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
CONF
"${sudo[@]}" tee "$rootfs/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
"${sudo[@]}" find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
"${sudo[@]}" find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
"${sudo[@]}" rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
  "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
"${sudo[@]}" tar -C "$rootfs" -c . \
  | "${sudo[@]}" "$engine" import \
      --change 'CMD ["/bin/bash"]' \
      --change 'ENV LANG=C.UTF-8' \
      - "$tag" >&2
echo "imported $tag in $(( $(date +%s) - start )) s" >&2
echo "$tag"
