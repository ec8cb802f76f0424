# shellcheck shell=bash
# Sourced, not run. container_engine prints the engine to use: $CONTAINER_ENGINE when
# set, else docker when a daemon answers, else podman (machines with no daemon).
container_engine() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then
    echo "$CONTAINER_ENGINE"
  elif command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; then
    echo docker
  else
    echo podman
  fi
}
