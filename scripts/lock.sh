#!/usr/bin/env bash
# Compile the hash-checked lock files from pyproject.toml (versions and hashes only,
# never an index or download URL, so the locks work behind any mirror or proxy).
#   scripts/lock.sh          rewrite the locks
#   scripts/lock.sh --check  fail if any lock is stale (compile to a temp dir and compare)
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
check=0
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --check) check=1 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
UV=${UV:-$(scripts/setup-venv.sh --print-uv)}
export UV_NATIVE_TLS=${UV_NATIVE_TLS:-1}  # the system CA store (corporate proxies)
out=.
if [ "$check" = 1 ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  # uv keeps the versions already in an output file: starting from copies of the
  # committed locks, a new release on the index does not make a lock "stale" --
  # only a change to pyproject.toml does.
  cp requirements*.lock "$out/"
fi

# name|source|extra uv pip compile arguments
locks=(
  "requirements.lock|pyproject.toml|"
  "requirements-ml.lock|pyproject.toml|--extra ml"
  # The lambda image is the prod venv plus awslambdaric: the prod lock constrains it, so
  # the packages both share keep the prod pins and the lambda layer adds only the client.
  "requirements-lambda.lock|pyproject.toml|--extra lambda --constraint @OUT@/requirements.lock"
  "requirements-dev-slim.lock|pyproject.toml|--group dev"
  "requirements-dev.lock|pyproject.toml|--all-extras --group dev --group notebook --group infra --group bench --group mutation"
  # The image builds' SBOM generator: a build tool, never installed into a job's venv.
  "requirements-sbom.lock|docker/sbom-requirements.in|"
  # podman-compose for the compose.yaml test, installed into a throwaway venv by the test.
  "requirements-compose.lock|tests/container/compose-requirements.in|"
)
for entry in "${locks[@]}"; do
  IFS='|' read -r name source args <<<"$entry"
  # shellcheck disable=SC2206  # the extra arguments are meant to split
  extra=(${args//@OUT@/$out})
  # --python-version: the oldest Python we support; --universal covers the rest.
  "$UV" pip compile --quiet --universal --generate-hashes --no-header \
    --python-version 3.11 "${extra[@]}" "$source" -o "$out/$name"
  # A constraint is annotated with the path it was read from: name it the same way in
  # both modes, so --check compares like with like.
  sed -i "s|-c $out/requirements.lock|-c requirements.lock|" "$out/$name"
  if [ "$check" = 1 ] && ! diff -q "$out/$name" "$name" >/dev/null; then
    echo "stale lock: $name (run 'make lock')" >&2
    diff -u "$name" "$out/$name" | head -40 >&2 || true
    exit 1
  fi
done
# checkov (make lint) lives in its own environment from its own lock: it pins
# packaging<24, which the project cannot share (infra/checkov.in says why).
"$UV" pip compile --quiet --universal --generate-hashes --no-header \
  --python-version 3.11 infra/checkov.in -o "$out/requirements-checkov.lock"
if [ "$check" = 1 ] && ! diff -q "$out/requirements-checkov.lock" requirements-checkov.lock >/dev/null; then
  echo "stale lock: requirements-checkov.lock (run 'make lock')" >&2
  diff -u requirements-checkov.lock "$out/requirements-checkov.lock" | head -40 >&2 || true
  exit 1
fi
[ "$check" = 1 ] && echo "locks are up to date" || echo "locks written"
