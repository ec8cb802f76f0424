#!/usr/bin/env bash
# Every linter the project uses, one after the other; exits non-zero if any fails.
#   scripts/lint.sh
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
cd "$(dirname "$0")/.."
bin=${VENV:-.venv}/bin
status=0
run() { echo "--- $*" >&2; "$@" || status=1; }

run "$bin/ruff" check .
run "$bin/ruff" format --check .
mapfile -t shell_scripts < <(git ls-files -co --exclude-standard '*.sh' .ci/run docker/install-venv)
[ "${#shell_scripts[@]}" -eq 0 ] || run "$bin/shellcheck" --external-sources "${shell_scripts[@]}"
mapfile -t dockerfiles < <(git ls-files -co --exclude-standard '*Dockerfile*')
[ "${#dockerfiles[@]}" -eq 0 ] || run "$bin/hadolint" "${dockerfiles[@]}"
mapfile -t notebooks < <(git ls-files -co --exclude-standard '*.ipynb')
if [ "${#notebooks[@]}" -gt 0 ]; then
  # nbstripout --verify exits non-zero when a notebook still carries outputs.
  run "$bin/nbstripout" --verify "${notebooks[@]}"
fi
# checkov on the synthesized CloudFormation templates (its own environment and lock).
run infra/checkov.sh
exit "$status"
