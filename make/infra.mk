# Infrastructure: the CDK app in infra/ (a repository stack and a pipeline stack per ENV).
# Synth needs no AWS account and no CDK CLI; bootstrap, diff and deploy use the CLI
# pinned in config/versions.conf, running the app with the project venv (infra/cdk.json).
ENV ?= dev
INFRA_OUT ?= infra/cdk.out
# `version` is make/images.mk's reader (included before this file; expanded lazily anyway).
AWS_CDK_CLI_VERSION ?= $(call version,AWS_CDK_CLI_VERSION)
# Where the job runs: fargate (the prod image as an ECS task) or lambda (the `lambda`
# image as a function); `make ml-push COMPUTE=lambda` builds and pushes the lambda target.
COMPUTE ?= fargate
# The tag `make ml-push` pushes: <version>-<git sha>[-lambda]; override to deploy another one.
IMAGE_TAG ?= $(shell bash -c '. scripts/lib/common.sh && project_version')-$(shell git rev-parse --short=12 HEAD)$(if $(filter lambda,$(COMPUTE)),-lambda)
INFRA_CONTEXT ?=
# jsii's banner for an end-of-life Node, relayed as b'...' lines (infra/dsjob_infra/node.py).
JSII_ENV = JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=$(shell node --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p')
CDK = cd infra && $(JSII_ENV) npx --yes aws-cdk@$(AWS_CDK_CLI_VERSION) --app '$(abspath $(PY)) app.py' \
	-c environment=$(ENV) -c compute=$(COMPUTE) -c imageTag=$(IMAGE_TAG) $(INFRA_CONTEXT)
# ECR and stack look-ups (boto3 only): region from AWS_REGION, repository from the stack.
ECR = PYTHONPATH=infra $(PY) -m dsjob_infra.ecr --env $(ENV)

.PHONY: infra-synth infra-diff infra-deploy infra-bootstrap infra-repository infra-platform

infra-synth: setup ## Synthesize both CloudFormation templates for ENV and COMPUTE (no AWS account needed)
	@rm -rf $(INFRA_OUT)
	@$(JSII_ENV) CDK_OUTDIR=$(INFRA_OUT) \
		CDK_CONTEXT_JSON='{"environment": "$(ENV)", "compute": "$(COMPUTE)", "imageTag": "$(IMAGE_TAG)"}' \
		$(PY) infra/app.py
	@echo "templates: $$(ls $(INFRA_OUT)/*.template.json | tr '\n' ' ')"

infra-diff: setup ## Compare the stacks for ENV with what is deployed (AWS credentials, npx)
	@digest=$$($(ECR) digest --tag '$(IMAGE_TAG)') && $(CDK) -c imageDigest=$$digest diff

infra-bootstrap: setup ## Bootstrap CDK once per account and region: aws://ACCOUNT/REGION of your credentials
	@target=$$($(ECR) target) && echo "bootstrapping $$target" >&2 && $(CDK) bootstrap "$$target"

infra-repository: setup ## Deploy ENV's image repository stack (once, before the first ml-push)
	@$(CDK) deploy --require-approval broadening DsPreprocessingRepository-$(ENV)

infra-deploy: setup ## Deploy ENV's pipeline with IMAGE_TAG, pinned by digest; refuses a tag not in ECR
	@digest=$$($(ECR) digest --tag '$(IMAGE_TAG)') \
		&& echo "deploying $(IMAGE_TAG) = $$digest" >&2 \
		&& $(CDK) -c imageDigest=$$digest deploy --require-approval broadening DsPreprocessing-$(ENV)

infra-platform: setup ## Print the --platform ENV's task runs (linux/amd64 or linux/arm64)
	@$(ECR) platform
