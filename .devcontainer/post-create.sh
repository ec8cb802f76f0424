#!/usr/bin/env bash
# Inside the dev container, once after it is created (its postCreateCommand): offline, seconds.
#   .devcontainer/post-create.sh
# The project itself needs no install step: the image's /opt/venv holds every
# dependency from the lock, and PYTHONPATH (containerEnv) puts the workspace's src/
# ahead of the copy installed in the image -- an editable install without writing
# to the root-owned venv, without a build backend, without the network.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/../scripts/lib/common.sh"
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
cd "$(dirname "$0")/.."
venv=${VENV:-/opt/venv}

# The workspace may belong to another uid than dev (a root-owned checkout): git
# refuses such a repository unless it is marked safe, and `make lint` uses git.
git config --global --add safe.directory "$PWD"

# `make test-unit` & co. run scripts/setup-venv.sh first, which rebuilds $VENV unless
# its stamp matches this lock. The image was just built from this very lock, so
# record that (same fingerprint as setup-venv.sh) instead of re-syncing a root-owned
# venv over the network. After a lock change, rebuild the container.
sha256sum requirements-dev.lock pyproject.toml | sha256sum | cut -d' ' -f1 \
  | sudo tee "$venv/.dsjob-lock.sha256" >/dev/null

python -c 'import dsjob, sys; print("dsjob from", dsjob.__file__, "on Python", sys.version.split()[0])'
dsjob health
