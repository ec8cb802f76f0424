#!/usr/bin/env bash
# Install Debian's docker-registry (a real OCI registry) for the push tests (idempotent).
#   scripts/ci/setup-registry.sh
# Only the binary is wanted: tests start it on 127.0.0.1:<free port> with their own
# config and stop it. Debian's default service listens on all interfaces, so it is
# kept from starting during the install and stopped/disabled if it runs anyway.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

if ! dpkg-query -W -f='${Status}' docker-registry 2>/dev/null | grep -q 'install ok installed'; then
  # policy-rc.d exit 101 = "action forbidden": the package's postinst starts nothing.
  policy=/usr/sbin/policy-rc.d
  had_policy=0
  [ -e "$policy" ] && had_policy=1
  if [ "$had_policy" = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod +x "$policy"
  fi
  restore() { if [ "$had_policy" = 0 ]; then "${sudo[@]}" rm -f "$policy"; fi; }
  trap restore EXIT
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends docker-registry
  restore
  trap - EXIT
fi

# Belt and braces: whatever init system there is, the default service stays off.
if [ -d /run/systemd/system ]; then
  "${sudo[@]}" systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
elif command -v systemctl >/dev/null 2>&1; then
  # Not booted with systemd: disable still removes the enablement symlinks offline.
  "${sudo[@]}" systemctl disable docker-registry.service >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/docker-registry ]; then
  "${sudo[@]}" /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
  "${sudo[@]}" update-rc.d docker-registry disable >/dev/null 2>&1 || true
fi
pids=$(pgrep -x docker-registry || true)
for pid in $pids; do
  # Only the packaged service (its default config), never a registry a test started.
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '/etc/docker/registry/config.yml'; then
    "${sudo[@]}" kill "$pid" || true
  fi
done

command -v docker-registry >/dev/null || [ -x /usr/bin/docker-registry ]
echo "docker-registry $(/usr/bin/docker-registry --version 2>/dev/null | awk '{print $NF}') installed (service not running)" >&2
