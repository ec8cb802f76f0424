# shellcheck shell=bash
# Interactive shell setup for the dev image (sourced from /etc/bash.bashrc and ~/.bashrc).
# The prompt says you are inside the container; the aliases are the shell
# conveniences: data / ml (activate), test, lint, ml-versions, health-check, jupyter-lab.
# Idempotent: sourced again at the end of ~/.bashrc so the skeleton's PS1 does not win.

[[ $- == *i* ]] || return 0

# Login shells run Debian's /etc/profile, which resets PATH: put the venv back first.
case ":${PATH}:" in *:/opt/venv/bin:*) ;; *) PATH=/opt/venv/bin:${PATH} ;; esac

# The venv is already first on PATH; activation only sets VIRTUAL_ENV for tools
# that look at it. Our prompt shows the environment, so keep activate's out of it.
export VIRTUAL_ENV_DISABLE_PROMPT=1
alias data='. /opt/venv/bin/activate'
alias ml='. /opt/venv/bin/activate'
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

if [ -f /usr/share/bash-completion/bash_completion ] && [ -z "${BASH_COMPLETION_VERSINFO:-}" ]; then
  # shellcheck source=/dev/null
  . /usr/share/bash-completion/bash_completion
fi

# `test` runs pytest. An alias named test would also rewrite every `test ...` in rc
# files and functions parsed after it (Debian's ~/.bashrc has `test -r ~/.dircolors`),
# so it is defined from the prompt hook: after all startup files, for typed commands only.
_dsjob_interactive_aliases() { alias test='python -m pytest'; }
case "${PROMPT_COMMAND:-}" in
  *_dsjob_interactive_aliases*) ;;
  *) PROMPT_COMMAND="_dsjob_interactive_aliases${PROMPT_COMMAND:+;$PROMPT_COMMAND}" ;;
esac

PS1='\[\e[1;36m\][ds-preprocessing:dev]\[\e[0m\] \u@\h:\w\$ '
