#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the JupyterLab browser test (idempotent).
#   scripts/ci/setup-browser.sh
# Debian's package, not a browser build downloaded by a tool: only the Debian
# archive is reachable from CI. tests/container/test_jupyter.py looks for
# /usr/bin/chromium (override with DSJOB_CHROMIUM).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

if command -v chromium >/dev/null 2>&1; then
  chromium --version >&2
  exit 0
fi

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" apt-get update -qq
# fonts-dejavu-core: without any font the screenshot renders boxes instead of text.
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
  chromium fonts-dejavu-core
chromium --version >&2
