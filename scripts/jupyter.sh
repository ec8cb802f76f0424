#!/usr/bin/env bash
# JupyterLab or a shell in the dev image, with the repo mounted at /workspace.
#   scripts/jupyter.sh [lab|shell|start|stop|url]   (default: lab)
#     lab    JupyterLab in the foreground; prints the URL with its token
#     shell  an interactive shell in the same container setup (extra args run instead)
#     start  JupyterLab detached; waits until the API answers, prints the URL (tests, scripts)
#     stop   removes the detached container
#     url    prints the URL of the detached container
# Environment: CONTAINER_ENGINE (podman|docker), DEV_IMAGE, JUPYTER_PORT (8890),
# JUPYTER_TOKEN (generated when unset), JUPYTER_NAME (container name),
# JUPYTER_NETWORK (host|publish), AWS_ENDPOINT_URL, AWS_PROFILE, AWS_REGION.
#
# Files written in the container belong to you: rootless podman maps your uid
# with --userns=keep-id; rootful podman and docker run as --user $(id -u).
# The default --network host lets the container reach `dsjob local serve` on the
# host's 127.0.0.1 unchanged; JUPYTER_NETWORK=publish (Docker Desktop) publishes
# the port instead and points AWS_ENDPOINT_URL at the host gateway.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
cd "$(dirname "$0")/.."
load_versions

mode=lab
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  lab|shell|start|stop|url) mode=$1; shift ;;
  "") ;;
  *) echo "unknown mode: $1" >&2; usage >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib/container-engine.sh
. scripts/lib/container-engine.sh
engine=$(container_engine)
command -v "$engine" >/dev/null 2>&1 \
  || { echo "no container engine: install podman or docker (or set CONTAINER_ENGINE)" >&2; exit 1; }
engine_name=$(basename "$engine")
image=${DEV_IMAGE:-${IMAGE_NAME}:dev}
port=${JUPYTER_PORT:-8890}
name=${JUPYTER_NAME:-dsjob-jupyter-$port}
network=${JUPYTER_NETWORK:-host}

url_for() { printf 'http://127.0.0.1:%s/lab?token=%s\n' "$port" "$1"; }

case "$mode" in
  stop) "$engine" rm -f "$name" >/dev/null; exit 0 ;;
  url)
    token=$("$engine" inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$name" \
      | sed -n 's/^JUPYTER_TOKEN=//p')
    url_for "$token"; exit 0 ;;
esac

if ! "$engine" image inspect "$image" >/dev/null 2>&1; then
  echo "image $image not found: build the dev image first (see make help, images targets) or set DEV_IMAGE" >&2
  exit 1
fi

# A generated token unless the caller chose one; passed by environment, not argv.
if [ -z "${JUPYTER_TOKEN:-}" ]; then
  JUPYTER_TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
fi
export JUPYTER_TOKEN

uid=$(id -u)
gid=$(id -g)
args=(--security-opt label=disable -w /workspace
      -v "$PWD:/workspace"
      # The mounted sources win over the copy installed in the image: edits apply at once.
      -e PYTHONPATH=/workspace/src
      -e JUPYTER_TOKEN
      # Lab settings shared with the devcontainer (no news-feed prompt).
      -e JUPYTER_CONFIG_PATH=/workspace/.devcontainer/jupyter)
if [ "$engine_name" = podman ] && [ "$("$engine" info --format '{{.Host.Security.Rootless}}')" = true ]; then
  args+=(--userns=keep-id)
else
  args+=(--user "$uid:$gid")
fi
# Any uid other than the image's dev user (1000) has no home in the image.
if [ "$uid" != 1000 ]; then
  args+=(-e HOME=/tmp/home)
fi

ip=127.0.0.1
endpoint=${AWS_ENDPOINT_URL:-}
case "$network" in
  host) args+=(--network host) ;;
  publish)
    args+=(-p "127.0.0.1:$port:$port")
    ip=0.0.0.0
    gateway=host.docker.internal
    [ "$engine_name" = podman ] && gateway=host.containers.internal
    [ "$engine_name" = docker ] && args+=(--add-host host.docker.internal:host-gateway)
    endpoint=${endpoint//127.0.0.1/$gateway}
    endpoint=${endpoint//localhost/$gateway} ;;
  *) echo "JUPYTER_NETWORK must be host or publish, not $network" >&2; exit 2 ;;
esac
[ -z "$endpoint" ] || args+=(-e "AWS_ENDPOINT_URL=$endpoint")

# Real profiles when you have them, read-only; nothing is copied into the image.
if [ -d "$HOME/.aws" ]; then
  args+=(-v "$HOME/.aws:/aws:ro" -e AWS_CONFIG_FILE=/aws/config -e AWS_SHARED_CREDENTIALS_FILE=/aws/credentials)
fi
# An empty AWS_PROFILE makes boto3 fail (ProfileNotFound), so only pass set values.
for var in AWS_PROFILE AWS_REGION AWS_DEFAULT_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN; do
  [ -z "${!var:-}" ] || args+=(-e "$var")
done

# No news feed and no update check: the container may be offline, and nobody should be
# asked for consent to fetch announcements on every start.
lab=(jupyter lab --no-browser "--ip=$ip" "--port=$port" --ServerApp.port_retries=0
     --ServerApp.root_dir=/workspace --LabApp.news_url=None
     --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate)
[ "$uid" != 0 ] || lab+=(--allow-root)

case "$mode" in
  shell)
    tty=(-i)
    [ -t 0 ] && tty+=(-t)
    # Not a login shell: Debian's /etc/profile resets PATH and would drop /opt/venv/bin.
    [ $# -gt 0 ] || set -- bash
    exec "$engine" run --rm "${tty[@]}" "${args[@]}" "$image" "$@" ;;
  lab)
    tty=(-i)
    [ -t 0 ] && tty+=(-t)
    echo "JupyterLab: $(url_for "$JUPYTER_TOKEN")" >&2
    exec "$engine" run --rm --name "$name" "${tty[@]}" "${args[@]}" "$image" "${lab[@]}" ;;
  start)
    # No --rm: the logs stay readable when the server dies; `stop` removes it.
    "$engine" rm -f "$name" >/dev/null 2>&1 || true
    "$engine" run -d --name "$name" "${args[@]}" "$image" "${lab[@]}" >/dev/null
    base=http://127.0.0.1:$port
    for _ in $(seq 1 120); do
      if curl -fsS -o /dev/null -H "Authorization: token $JUPYTER_TOKEN" "$base/api/status" 2>/dev/null; then
        url_for "$JUPYTER_TOKEN"
        exit 0
      fi
      if [ "$("$engine" inspect --format '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
        "$engine" logs "$name" >&2 || true
        echo "JupyterLab container $name exited" >&2
        exit 1
      fi
      sleep 0.5
    done
    "$engine" logs "$name" >&2 || true
    echo "JupyterLab did not answer on $base within 60 s" >&2
    exit 1 ;;
esac
