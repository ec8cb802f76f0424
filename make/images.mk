# Images: build, test, inspect, push and rehearse the prod container (docker/Dockerfile).
# The engine is docker when a daemon answers, else podman; BASE_IMAGE and IMAGE_NAME
# default to config/versions.conf (CI sets BASE_IMAGE to its bootstrapped Debian base).
ifeq ($(strip $(CONTAINER_ENGINE)),)
CONTAINER_ENGINE = $(shell if command -v docker >/dev/null 2>&1 && timeout 5 docker info >/dev/null 2>&1; then echo docker; else echo podman; fi)
endif
BASE_IMAGE ?= $(shell . config/versions.conf && echo "$$BASE_IMAGE")
IMAGE_NAME ?= $(shell . config/versions.conf && echo "$$IMAGE_NAME")
TARGET ?= dev
BUILD_FLAGS ?=
PUSH_FLAGS ?=
ML_TEST_IMAGES ?= $(IMAGE_NAME):dev $(IMAGE_NAME):prod
RUN_LOCAL_ARGS ?=

IMAGES_ENV = CONTAINER_ENGINE=$(CONTAINER_ENGINE) BASE_IMAGE=$(BASE_IMAGE) IMAGE_NAME=$(IMAGE_NAME)
BUILD = $(IMAGES_ENV) scripts/build-ml-container.sh

.PHONY: ml-build ml-build-slim ml-build-prod ml-test ml-versions ml-push ml-run-local

ml-build: ## Build an image: TARGET=dev (default) or TARGET=production (BUILD_FLAGS=--with-ml, --no-cache...)
	@$(BUILD) --target $(TARGET) $(BUILD_FLAGS)

ml-build-slim: ## Build the slim dev image (no JupyterLab, no ML extras): the fast CI/terminal image
	@$(BUILD) --target dev --slim $(BUILD_FLAGS)

ml-build-prod: ## Build the production image (the ECS task image)
	@$(BUILD) --target production $(BUILD_FLAGS)

ml-test: ## Run `dsjob health` inside the built images (ML_TEST_IMAGES, default :dev and :prod)
	@for image in $(ML_TEST_IMAGES); do \
	  $(CONTAINER_ENGINE) image inspect "$$image" >/dev/null 2>&1 \
	    || { echo "$$image is not built (make ml-build / make ml-build-prod)" >&2; exit 1; }; \
	  echo "--- dsjob health in $$image" >&2; \
	  $(CONTAINER_ENGINE) run --rm --entrypoint dsjob "$$image" health || exit 1; \
	done

ml-versions: ## Print the tool and package versions inside the prod image
	@$(CONTAINER_ENGINE) run --rm --entrypoint dsjob $(IMAGE_NAME):prod versions

ml-push: ## Build (cached) and push the prod image to REGISTRY, or ECR from the AWS account (PUSH_FLAGS=--force)
	@$(BUILD) --target production $(BUILD_FLAGS) --push $(if $(filter --force,$(PUSH_FLAGS)),--push-force)

ml-run-local: ## Run the prod image against `dsjob local serve` (the ECS job rehearsed on a laptop)
	@CONTAINER_ENGINE=$(CONTAINER_ENGINE) IMAGE=$(IMAGE_NAME):prod docker/run-local.sh $(RUN_LOCAL_ARGS)
