# shellcheck shell=bash
# Sourced, not run, by the project's bash scripts:
#   usage               print the script's header comment (line 2 to the first non-comment)
#   load_versions [KEY...]
#                       set every KEY=value of config/versions.conf as a shell variable;
#                       the KEYs named keep a value already set in the environment
#                       (CI passes BASE_IMAGE=its bootstrapped base)
#   project_version     print dsjob's version: [project] version in pyproject.toml, the
#                       one place it is written (the package metadata, the image tag and
#                       labels, the SBOM and the deploy tag all read it from there)
#   DSJOB_ROOT          the repository root
DSJOB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }

# shellcheck disable=SC2120  # called with no KEYs by most scripts
load_versions() {
  local key value overridable=" $* "
  while IFS='=' read -r key value; do
    case "$key" in '' | \#*) continue ;; esac
    if [[ "$overridable" == *" $key "* ]] && [ -n "${!key:-}" ]; then continue; fi
    printf -v "$key" '%s' "$value"
  done <"$DSJOB_ROOT/config/versions.conf"
}

project_version() {
  python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$DSJOB_ROOT/pyproject.toml"
}
