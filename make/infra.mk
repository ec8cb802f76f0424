# Infrastructure: the CDK app in infra/ (one stack per ENV). Synth needs no AWS account
# and no CDK CLI; diff and deploy use the CLI pinned in config/versions.conf.
ENV ?= dev
INFRA_OUT ?= infra/cdk.out
AWS_CDK_CLI_VERSION ?= $(shell sed -n 's/^AWS_CDK_CLI_VERSION=//p' config/versions.conf)
# The tag `make ml-push` pushes: <version>-<git sha>; override to deploy another one.
IMAGE_TAG ?= $(shell $(PY) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')-$(shell git rev-parse --short=12 HEAD)
INFRA_CONTEXT ?=
CDK = cd infra && npx --yes aws-cdk@$(AWS_CDK_CLI_VERSION) --app '$(abspath $(PY)) app.py' \
	-c environment=$(ENV) -c imageTag=$(IMAGE_TAG) $(INFRA_CONTEXT)

.PHONY: infra-synth infra-diff infra-deploy

infra-synth: setup ## Synthesize the CloudFormation template for ENV (no AWS account needed)
	@rm -rf $(INFRA_OUT)
	@CDK_OUTDIR=$(INFRA_OUT) CDK_CONTEXT_JSON='{"environment": "$(ENV)", "imageTag": "$(IMAGE_TAG)"}' \
		$(PY) infra/app.py
	@echo "template: $$(ls $(INFRA_OUT)/*.template.json)"

infra-diff: setup ## Compare the stack for ENV with what is deployed (AWS credentials, npx)
	@$(CDK) diff

infra-deploy: setup ## Deploy the stack for ENV=dev|prod with IMAGE_TAG (AWS credentials, npx)
	@$(CDK) deploy --require-approval broadening

.PHONY: infra-bootstrap
infra-bootstrap: ## Bootstrap CDK once per account and region (AWS credentials, npx)
	@cd infra && npx --yes aws-cdk@$(AWS_CDK_CLI_VERSION) bootstrap
