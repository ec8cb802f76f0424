# Images: build, test, inspect, push and rehearse the prod container (docker/Dockerfile).
# scripts/lib/container-engine.sh decides the engine (one place for every caller);
# BASE_IMAGE and IMAGE_NAME default to config/versions.conf (CI sets BASE_IMAGE to its
# bootstrapped Debian base).
ifeq ($(strip $(CONTAINER_ENGINE)),)
CONTAINER_ENGINE := $(shell bash -c '. scripts/lib/container-engine.sh && container_engine')
endif
# $(call version,KEY): KEY from config/versions.conf, read as every script reads it.
version = $(shell bash -c '. scripts/lib/common.sh && load_versions && echo "$${!1}"' - $(1))
BASE_IMAGE ?= $(call version,BASE_IMAGE)
IMAGE_NAME ?= $(call version,IMAGE_NAME)
TARGET ?= dev
BUILD_FLAGS ?=
PUSH_FLAGS ?=
ML_TEST_IMAGES ?= $(IMAGE_NAME):dev $(IMAGE_NAME):prod
RUN_LOCAL_ARGS ?=
INPUT ?=
SCRIPT ?=
PACKAGE ?=
TRANSFORM ?=

IMAGES_ENV = CONTAINER_ENGINE=$(CONTAINER_ENGINE) BASE_IMAGE=$(BASE_IMAGE) IMAGE_NAME=$(IMAGE_NAME)
BUILD = $(IMAGES_ENV) scripts/build-ml-container.sh

.PHONY: ml-build ml-build-slim ml-build-prod ml-build-lambda ml-test ml-versions ml-sbom ml-push ml-run-local pin-base
SBOM_IMAGE ?= $(IMAGE_NAME):prod
SBOM_OUT ?= sbom.cdx.json

ml-build: ## Build an image: TARGET=dev (default) or TARGET=production (BUILD_FLAGS=--with-ml, --no-cache...)
	@$(BUILD) --target $(TARGET) $(BUILD_FLAGS)

ml-build-slim: ## Build the slim dev image (no JupyterLab, no ML extras): the fast CI/terminal image
	@$(BUILD) --target dev --slim $(BUILD_FLAGS)

ml-build-prod: ## Build the production image (the ECS task image)
	@$(BUILD) --target production $(BUILD_FLAGS)

ml-build-lambda: ## Build the Lambda container image (prod + awslambdaric, handler dsjob.lambda_handler.handler)
	@$(BUILD) --target lambda $(BUILD_FLAGS)

ml-sbom: ## Export the CycloneDX SBOM of a built image (SBOM_IMAGE=$(IMAGE_NAME):prod) to SBOM_OUT
	@$(CONTAINER_ENGINE) run --rm --entrypoint cat $(SBOM_IMAGE) /opt/dsjob/sbom.cdx.json > $(SBOM_OUT).tmp \
	  && mv $(SBOM_OUT).tmp $(SBOM_OUT) && echo "$(SBOM_IMAGE) -> $(SBOM_OUT)" >&2 \
	  || { rm -f $(SBOM_OUT).tmp; exit 1; }

pin-base: ## Pin BASE_IMAGE in config/versions.conf to its registry digest (says so when no registry answers)
	@CONTAINER_ENGINE=$(CONTAINER_ENGINE) scripts/pin-base.sh

ml-test: ## Run `dsjob health` inside the built images (ML_TEST_IMAGES, default :dev and :prod)
	@for image in $(ML_TEST_IMAGES); do \
	  $(CONTAINER_ENGINE) image inspect "$$image" >/dev/null 2>&1 \
	    || { echo "$$image is not built (make ml-build / make ml-build-prod)" >&2; exit 1; }; \
	  echo "--- dsjob health in $$image" >&2; \
	  $(CONTAINER_ENGINE) run --rm --entrypoint dsjob "$$image" health || exit 1; \
	done

ml-versions: ## Print the tool and package versions inside the prod image
	@$(CONTAINER_ENGINE) run --rm --entrypoint dsjob $(IMAGE_NAME):prod versions

ml-push: ## Build (cached) and push the prod image (COMPUTE=lambda: the lambda image) to REGISTRY or ECR (PUSH_FLAGS=--force)
	@$(BUILD) --target $(if $(filter lambda,$(COMPUTE)),lambda,production) $(BUILD_FLAGS) --push $(if $(filter --force,$(PUSH_FLAGS)),--push-force)

ml-run-local: ## Run the prod image against `dsjob local serve` (INPUT=, SCRIPT=, PACKAGE=, TRANSFORM=: a file or s3:// URI)
	@CONTAINER_ENGINE=$(CONTAINER_ENGINE) IMAGE=$(IMAGE_NAME):prod docker/run-local.sh \
	  $(if $(INPUT),--input "$(INPUT)") $(if $(SCRIPT),--script "$(SCRIPT)") \
	  $(if $(PACKAGE),--package "$(PACKAGE)") $(if $(TRANSFORM),--transform "$(TRANSFORM)") \
	  $(RUN_LOCAL_ARGS)
