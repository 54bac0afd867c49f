# SAM / CloudFormation / LocalStack targets. Included from the main Makefile, which defines
# BIN (.venv/bin), TOOLS (.venv-tools: aws-sam-cli + cfn-lint) and the `tools` target.
#
#   make template-lint   sam validate --lint + cfn-lint; offline, no AWS credentials needed
#   make sam-build       sam build into .aws-sam/ (no container; needs python3.12, see below)
#   make package-size    sam-build, then unzipped layer + function sizes vs Lambda's 250 MB
#   make sam-deploy      deploy to AWS (real credentials; STACK, TREE_B, TREE_L, API_AUTH, ...)
#   make localstack-up / localstack-test / localstack-down   (Docker; see localstack/README.md)

SAM := $(TOOLS)/bin/sam
CFN_LINT := $(TOOLS)/bin/cfn-lint
SAM_TEMPLATE ?= template.yaml
SAM_BUILD_DIR ?= .aws-sam/build
SAM_REGION ?= us-east-1
# --cached reuses unchanged layer/function builds (keyed on source + requirements hashes).
SAM_BUILD_FLAGS ?= --cached --parallel
# After sam build: drop from the layer what the runtime never loads (boto3's stack, pyarrow
# Flight/S3, tests, headers; see infra/package_size.py), then import the handlers with
# python3.12 against the pruned layer. SAM_PRUNE=0 keeps the layer as pip installed it.
SAM_PRUNE ?= 1

# Linting and building never talk to AWS, but SAM CLI and cfn-lint create boto3 sessions,
# so give them a region and obviously fake credentials, and switch telemetry off.
SAM_OFFLINE_ENV := env -u AWS_PROFILE AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline \
	AWS_DEFAULT_REGION=$(SAM_REGION) AWS_REGION=$(SAM_REGION) SAM_CLI_TELEMETRY=0
# Local Fn::ForEach expansion (AWS::LanguageExtensions) is opt-in in SAM CLI >= 1.160.
SAM_LE := --language-extensions

# sam build installs the layer's wheels for the Lambda runtime (python3.12), and SAM CLI
# insists on a working `python3.12` on PATH. A pyenv shim that exists but is not enabled does
# not count, so each candidate is run. Prints the directory to prepend to PATH.
SAM_RUNTIME_PYTHON := python3.12
define FIND_SAM_PYTHON
for c in "$$(command -v $(SAM_RUNTIME_PYTHON) 2>/dev/null)" \
	 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/$(SAM_RUNTIME_PYTHON) \
	 /usr/local/bin/$(SAM_RUNTIME_PYTHON) /usr/bin/$(SAM_RUNTIME_PYTHON); do \
	  if [ -n "$$c" ] && [ -x "$$c" ] && "$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then \
	    dirname "$$c"; exit 0; \
	  fi; \
	done; exit 1
endef

# make sam-deploy / localstack-up: the tree shape. WorkerPositions (0..size-1) is derived here
# because CloudFormation cannot compute size = 1 + b + ... + b^l itself.
STACK ?= squash
TREE_B ?= 4
TREE_L ?= 1
API_AUTH ?= AWS_IAM
INDEX_BUCKET ?=
INDEX_PREFIX ?= indexes/
LOG_LEVEL ?= INFO
tree_positions = $(shell b=$(1); l=$(2); n=1; s=1; i=0; \
	while [ $$i -lt $$l ]; do n=$$((n * b)); s=$$((s + n)); i=$$((i + 1)); done; \
	seq -s, 0 $$((s - 1)))
WORKER_POSITIONS = $(call tree_positions,$(TREE_B),$(TREE_L))

.PHONY: template-lint sam-build package-size sam-deploy localstack-up localstack-down localstack-test

template-lint: tools
	$(SAM_OFFLINE_ENV) $(SAM) validate --lint --template $(SAM_TEMPLATE) --region $(SAM_REGION)
	$(SAM_OFFLINE_ENV) $(CFN_LINT) $(SAM_TEMPLATE)

sam-build: tools
	@pydir=$$($(FIND_SAM_PYTHON)) || { \
	  echo "sam-build: no working $(SAM_RUNTIME_PYTHON) found. The Lambda runtime is python3.12, and" >&2; \
	  echo "  sam build (no container) needs that interpreter on PATH. Install it, e.g." >&2; \
	  echo "  'pyenv install 3.12' or 'apt-get install python3.12', then re-run make sam-build." >&2; \
	  exit 1; }; \
	echo "sam-build: using $$pydir/$(SAM_RUNTIME_PYTHON)"; \
	PATH="$$pydir:$$PATH" $(SAM_OFFLINE_ENV) $(SAM) build $(SAM_LE) $(SAM_BUILD_FLAGS) \
	  --template-file $(SAM_TEMPLATE) --build-dir $(SAM_BUILD_DIR) && \
	$(TOOLS)/bin/python infra/package_size.py $(if $(filter 1,$(SAM_PRUNE)),--prune) --no-report \
	  --check-imports "$$pydir/$(SAM_RUNTIME_PYTHON)" $(SAM_BUILD_DIR)

package-size: sam-build
	$(TOOLS)/bin/python infra/package_size.py $(SAM_BUILD_DIR)

# Real AWS: needs credentials and DEPLOY_BUCKET, an S3 bucket in the target region for the
# code artifacts. localstack/bundle.py uploads them and writes .aws-sam/packaged.yaml, because
# `sam package`/`sam deploy` of SAM CLI 1.170 leave the CodeUri of a Fn::ForEach over a
# parameter pointing at the local build folder (aws/aws-sam-cli#9117). The packaged template
# keeps AWS::LanguageExtensions (hence CAPABILITY_AUTO_EXPAND and --language-extensions).
DEPLOY_BUCKET ?=
# e.g. SAM_DEPLOY_FLAGS=--no-confirm-changeset for CI (samconfig.toml asks for confirmation)
SAM_DEPLOY_FLAGS ?=
sam-deploy: sam-build
	@test -n "$(DEPLOY_BUCKET)" || { \
	  echo "sam-deploy: set DEPLOY_BUCKET=<S3 bucket for the code artifacts, in the stack's region>" >&2; exit 1; }
	$(TOOLS)/bin/python localstack/bundle.py package --build-dir $(SAM_BUILD_DIR) \
	  --s3-bucket $(DEPLOY_BUCKET) --output .aws-sam/packaged.yaml
	env SAM_CLI_TELEMETRY=0 $(SAM) deploy $(SAM_LE) $(SAM_DEPLOY_FLAGS) --template-file .aws-sam/packaged.yaml \
	  --stack-name $(STACK) --s3-bucket $(DEPLOY_BUCKET) --s3-prefix squash-artifacts \
	  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --no-fail-on-empty-changeset \
	  --parameter-overrides ApiAuth=$(API_AUTH) TreeBranching=$(TREE_B) TreeDepth=$(TREE_L) \
	  WorkerPositions=$(WORKER_POSITIONS) $(if $(INDEX_BUCKET),IndexBucketName=$(INDEX_BUCKET)) \
	  IndexPrefix=$(INDEX_PREFIX) LogLevel=$(LOG_LEVEL)

# LocalStack (needs a Docker engine; see localstack/README.md). start.sh expands the template
# for the tree TREE_B/TREE_L, starts LocalStack, whose ready hook deploys it, and writes
# .local/localstack-endpoints.json, which localstack-test hands to the integration suite.
localstack-up: sam-build
	SQUASH_SKIP_BUILD=1 TREE_B=$(TREE_B) TREE_L=$(TREE_L) localstack/start.sh

localstack-down:
	localstack/stop.sh

# localstack-test points the integration suite at a LocalStack that localstack-up deployed to:
# LOCALSTACK_URL (empty: localstack-client's AWS_ENDPOINT_URL / LOCALSTACK_HOST / localhost:4566).
# check.py fails within seconds, saying why, when nothing answers there or SQUASH is not deployed.
LOCALSTACK_URL ?=
LOCALSTACK_ENDPOINTS ?= $(CURDIR)/.local/localstack-endpoints.json
LOCALSTACK_TESTS ?= tests/integration/test_serverless.py
localstack-test: setup
	LOCALSTACK_URL=$(LOCALSTACK_URL) $(BIN)/python localstack/check.py --endpoints $(LOCALSTACK_ENDPOINTS)
	SQUASH_ENDPOINTS=$(LOCALSTACK_ENDPOINTS) $(BIN)/pytest -q $(LOCALSTACK_TESTS)
