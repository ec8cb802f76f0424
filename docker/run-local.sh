#!/usr/bin/env bash
# Run the prod image against the embedded AWS: the ECS task rehearsed on a laptop.
#   docker/run-local.sh [--rows N] [--with-script] [--input F] [--script F] [--package F]
#       [--transform F] [-- EXTRA dsjob run ARGS]
# --input/--script/--package/--transform take a local file (mounted read-only into the
# container) or an s3:// URI, and override what the seeded configuration names.
# Starts `.venv/bin/dsjob local serve` on a free loopback port, runs IMAGE (default
# ds-preprocessing:prod) on the host network with AWS_ENDPOINT_URL pointing at it,
# stops the server, and exits with the container's exit code. The container's stdout
# is this script's stdout (the job's JSON status line last), its stderr this script's
# stderr, with the time from container start to the job's first log line.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/../scripts/lib/common.sh"

root=$(cd "$(dirname "$0")/.." && pwd)
load_versions
image=${IMAGE:-$IMAGE_NAME:prod}
serve_args=()
run_args=()
job_args=()
mounts=()
# add_file FLAG VALUE: pass an s3:// URI on, mount a local file and pass its path inside.
add_file() {
  local flag=$1 value=$2 path inside
  case "$value" in
    s3://*) job_args+=("--$flag" "$value"); return ;;
  esac
  [ -f "$value" ] || { echo "--$flag: $value is not a file" >&2; exit 2; }
  path=$(realpath "$value")
  inside=/mnt/dsjob/$flag/$(basename "$path")
  mounts+=(-v "$path:$inside:ro")
  job_args+=("--$flag" "$inside")
}
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) serve_args+=(--rows "${2:?--rows needs a value}"); shift 2 ;;
    --with-script) serve_args+=(--with-script); shift ;;
    --input|--script|--package|--transform) add_file "${1#--}" "${2:?$1 needs a value}"; shift 2 ;;
    --) shift; run_args=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
# shellcheck source=scripts/lib/container-engine.sh
. "$root/scripts/lib/container-engine.sh"
engine=$(container_engine)
dsjob=${DSJOB:-$root/.venv/bin/dsjob}
[ -x "$dsjob" ] || { echo "$dsjob not found: run 'make setup'" >&2; exit 1; }

work=$(mktemp -d)
server_pid=""
# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
"$dsjob" local serve --port 0 "${serve_args[@]}" >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
endpoint=""
for _ in $(seq 1 300); do
  endpoint=$(sed -n 's/^export AWS_ENDPOINT_URL=//p' "$work/serve.out" | head -1)
  [ -n "$endpoint" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.err" >&2; echo "dsjob local serve exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$endpoint" ] || { cat "$work/serve.err" >&2; echo "dsjob local serve printed no endpoint in 30 s" >&2; exit 1; }
echo "embedded AWS at $endpoint; running $image" >&2

start=$(date +%s.%N)
set +e
# The container's stdout stays this script's stdout, so the job's JSON status line is
# its last line (README); only stderr (the job's logs, the engine's warnings) passes
# the watcher: fd 3 carries stdout around the pipe, which takes stderr alone.
{
  "$engine" run --rm --network host \
    -e AWS_ENDPOINT_URL="$endpoint" -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY \
    -e AWS_DEFAULT_REGION -e AWS_REGION \
    "${mounts[@]}" "$image" "${job_args[@]}" "${run_args[@]}" 2>&1 1>&3 3>&- | while IFS= read -r line; do
      # The job's first JSON log line, not the engine's own warnings.
      if [ ! -e "$work/first" ] && [ "${line#\{}" != "$line" ]; then
        : >"$work/first"
        awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "engine run -> first job log line: %.2f s\n", e - s}' >"$work/first"
      fi
      printf '%s\n' "$line" >&2
    done
  status=${PIPESTATUS[0]}
} 3>&1
set -e
[ -s "$work/first" ] && cat "$work/first" >&2
exit "$status"
