#!/usr/bin/env bash
# Host side of the devcontainer (its initializeCommand): runs before the container starts.
#   .devcontainer/initialize.sh
# Creates ~/.aws when missing, so the read-only bind mount never fails, and writes
# .devcontainer/.host.env (git-ignored, passed with --env-file) with the host's
# AWS_PROFILE / AWS_REGION / AWS_DEFAULT_REGION -- only those that are set:
# containerEnv would pass an unset one as "", and boto3 fails on AWS_PROFILE=""
# (ProfileNotFound). Names only; credentials stay in ~/.aws.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/../scripts/lib/common.sh"
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
here=$(cd "$(dirname "$0")" && pwd)

mkdir -p "$HOME/.aws"
{
  echo "# Written by .devcontainer/initialize.sh on every container start; do not edit."
  for var in AWS_PROFILE AWS_REGION AWS_DEFAULT_REGION; do
    if [ -n "${!var:-}" ]; then printf '%s=%s\n' "$var" "${!var}"; fi
  done
} >"$here/.host.env"
