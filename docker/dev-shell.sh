# shellcheck shell=bash
# Interactive shell setup for the dev image (sourced from /etc/bash.bashrc and /etc/profile.d).
# The prompt says you are inside the container; the aliases are the product brief's
# shell conveniences: data / ml (activate), test, lint, ml-versions, health-check, jupyter-lab.

[[ $- == *i* ]] || return 0
[ -n "${DSJOB_SHELL_LOADED:-}" ] && return 0
DSJOB_SHELL_LOADED=1

# The venv is already first on PATH; activation only sets VIRTUAL_ENV for tools
# that look at it. Our prompt shows the environment, so keep activate's out of it.
export VIRTUAL_ENV_DISABLE_PROMPT=1
alias data='. /opt/venv/bin/activate'
alias ml='. /opt/venv/bin/activate'

# pytest from the workspace (shadows the `test` builtin in interactive shells only;
# scripts and `[ ... ]` are unaffected).
alias test='python -m pytest'
alias ml-versions='dsjob versions'
alias health-check='dsjob health'

lint() {
  if [ -x scripts/lint.sh ]; then
    scripts/lint.sh "$@"
  else
    ruff check . && ruff format --check .
  fi
}

jupyter-lab() {
  if ! command -v jupyter-lab >/dev/null 2>&1; then
    echo "JupyterLab is not in this image (the slim dev image leaves it out): build the full dev image (make ml-build)" >&2
    return 1
  fi
  command jupyter-lab --ip=0.0.0.0 --port="${JUPYTER_PORT:-8888}" --no-browser "$@"
}

if [ -f /usr/share/bash-completion/bash_completion ]; then
  # shellcheck source=/dev/null
  . /usr/share/bash-completion/bash_completion
fi

PS1='\[\e[1;36m\][ds-preprocessing:dev]\[\e[0m\] \u@\h:\w\$ '
