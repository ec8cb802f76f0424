#!/usr/bin/env bash
# Make sure a base image exists locally and tell CI which one to build on (idempotent).
#   scripts/ci/setup-base-image.sh
# CI cannot pull python:3.12-slim-bookworm (no registry), so it bootstraps a Debian
# base from Debian packages (scripts/bootstrap-base-image.sh) unless that image is
# already present, then appends BASE_IMAGE=<tag> to .cache/ci.env, which .ci/run sources.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
cd "$(dirname "$0")/../.."

# .ci/run runs the setup scripts in name order: this one comes before the engine's.
bash scripts/ci/setup-container-engine.sh

tag=$(scripts/bootstrap-base-image.sh | tail -1)
mkdir -p .cache
touch .cache/ci.env
# Replace an earlier BASE_IMAGE line rather than piling them up.
grep -v '^BASE_IMAGE=' .cache/ci.env >.cache/ci.env.tmp || true
echo "BASE_IMAGE=$tag" >>.cache/ci.env.tmp
mv .cache/ci.env.tmp .cache/ci.env
echo "BASE_IMAGE=$tag (in .cache/ci.env)" >&2
