# Dev experience: JupyterLab and a shell in the dev image (scripts/jupyter.sh does the work).
# JUPYTER_PORT defaults to 8890 so it does not collide with VS Code's own Jupyter on 8888.
JUPYTER_PORT ?= 8890
JUPYTER_NETWORK ?= host
# Empty: scripts/jupyter.sh uses the dev tag built by the images targets.
DEV_IMAGE ?=
CONTAINER_ENGINE ?=

# Image and engine are only passed on when chosen; otherwise the script picks them
# (the engine as scripts/lib/container-engine.sh decides).
DEV_ENV = JUPYTER_PORT=$(JUPYTER_PORT) JUPYTER_NETWORK=$(JUPYTER_NETWORK) \
	$(if $(DEV_IMAGE),DEV_IMAGE=$(DEV_IMAGE)) $(if $(CONTAINER_ENGINE),CONTAINER_ENGINE=$(CONTAINER_ENGINE))

.PHONY: ml-jupyter ml-shell

ml-jupyter: ## JupyterLab in the dev image, repo mounted, URL+token printed (JUPYTER_PORT=8890, JUPYTER_TOKEN)
	@$(DEV_ENV) scripts/jupyter.sh lab

ml-shell: ## Interactive shell in the dev image with the repo mounted at /workspace
	@$(DEV_ENV) scripts/jupyter.sh shell
