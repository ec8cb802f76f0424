#!/usr/bin/env bash
# checkov on the synthesized templates of both environments (and dev on Lambda); fails on any finding.
#   infra/checkov.sh
# checkov runs from .cache/tools/checkov, installed from requirements-checkov.lock
# (hash-checked; rebuilt when the lock changes). Skips live in the CDK code
# (dsjob_infra/nag.py skip_checkov), each with its reason, as template metadata.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,6s/^# \{0,1\}//p' "$0"; exit 0 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
UV=${UV:-$(scripts/setup-venv.sh --print-uv)}
env_dir=.cache/tools/checkov
stamp=$env_dir/.lock.sha256
want=$(sha256sum requirements-checkov.lock | cut -d' ' -f1)
if [ ! -x "$env_dir/bin/checkov" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing checkov into $env_dir" >&2
  "$UV" venv --quiet --allow-existing --python .venv/bin/python "$env_dir"
  UV_NATIVE_TLS=${UV_NATIVE_TLS:-1} "$UV" pip sync --quiet --require-hashes \
    --python "$env_dir/bin/python" requirements-checkov.lock
  echo "$want" >"$stamp"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for env in dev prod; do
  make --no-print-directory infra-synth ENV="$env" INFRA_OUT="$out/$env" >/dev/null
done
make --no-print-directory infra-synth ENV=dev COMPUTE=lambda INFRA_OUT="$out/dev-lambda" >/dev/null
# --skip-download: no call home for guideline links; the checks ship with the package.
"$env_dir/bin/checkov" --quiet --compact --skip-download --framework cloudformation -d "$out"
