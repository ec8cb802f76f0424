#!/usr/bin/env bash
# Create .venv from the hash-checked locks (bootstrapping uv with pip if it is missing)
# and install the project itself, editable, without dependencies.
#   scripts/setup-venv.sh [LOCK]     default LOCK: requirements-dev.lock
#   scripts/setup-venv.sh --print-uv print the path of the pinned uv (bootstrapping it)
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

cd "$(dirname "$0")/.."
load_versions
: "${UV_VERSION:?UV_VERSION missing from config/versions.conf}"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# uv's own TLS stack does not see a corporate CA; the system store does.
export UV_NATIVE_TLS=${UV_NATIVE_TLS:-1}

uv_bin=$(command -v uv || true)
if [ -z "$uv_bin" ] || [ "$("$uv_bin" --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  tools=.cache/tools
  if [ ! -x "$tools/bin/uv" ] || [ "$("$tools/bin/uv" --version | awk '{print $2}')" != "$UV_VERSION" ]; then
    echo "bootstrapping uv $UV_VERSION into $tools" >&2
    "$PYTHON" -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
  uv_bin=$tools/bin/uv
fi
if [ "${1:-}" = "--print-uv" ]; then echo "$uv_bin"; exit 0; fi

lock=${1:-requirements-dev.lock}
stamp="$VENV/.dsjob-lock.sha256"
want=$(sha256sum "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/dsjob" ]; then
  exit 0  # already in sync with the lock: make targets stay fast
fi
[ -x "$VENV/bin/python" ] || "$uv_bin" venv --quiet --python "$PYTHON" "$VENV"
# Bytecode compiled at install: start-up must not depend on PYTHONDONTWRITEBYTECODE.
"$uv_bin" pip sync --quiet --python "$VENV/bin/python" --require-hashes --compile-bytecode "$lock"
"$uv_bin" pip install --quiet --python "$VENV/bin/python" --no-deps -e .
echo "$want" > "$stamp"
echo "$VENV ready ($lock)" >&2
