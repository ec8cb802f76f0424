#!/usr/bin/env bash
# Install the Dev Container CLI (@devcontainers/cli) at the pinned version (idempotent).
#   scripts/ci/setup-devcontainer-cli.sh
# The version is DEVCONTAINER_CLI_VERSION in config/versions.conf. Installs node
# and npm from Debian first when the machine has none.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
cd "$(dirname "$0")/../.."
# shellcheck source=/dev/null
load_versions
: "${DEVCONTAINER_CLI_VERSION:?missing from config/versions.conf}"

installed=$(devcontainer --version 2>/dev/null || true)
if [ "$installed" = "$DEVCONTAINER_CLI_VERSION" ]; then
  echo "devcontainer $installed already installed" >&2
  exit 0
fi

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
if ! command -v npm >/dev/null 2>&1; then
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends nodejs npm
fi

# --no-fund/--no-audit: no extra round trips to the registry beyond the install itself.
"${sudo[@]}" npm install -g --no-fund --no-audit --loglevel=error \
  "@devcontainers/cli@${DEVCONTAINER_CLI_VERSION}"
echo "devcontainer $(devcontainer --version)" >&2
