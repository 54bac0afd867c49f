# The Docker-free local stack (infra/local/README.md): moto S3 + Lambda router (AWS RIE) + HTTP API.
# Included from the main Makefile, which defines BIN, `setup` (.venv) and `tools` (.venv-tools,
# whose aws-sam-cli wheel carries the RIE binary).
LOCAL_DIR ?= .local
TREE_B ?= 4
TREE_L ?= 1
LOCAL_BUCKET ?= squash-local
LOCAL_CONCURRENCY ?= 4
LOCAL_IDLE_SECONDS ?= 300
# IAM (SigV4) auth on the local HTTP API, as deployed; AUTH=none lets unsigned curl through.
AUTH ?= iam

.PHONY: local-up local-down local-status

local-up: setup tools
	$(BIN)/python infra/local/stack.py up --dir $(LOCAL_DIR) --branching $(TREE_B) --depth $(TREE_L) \
	  --bucket $(LOCAL_BUCKET) --concurrency $(LOCAL_CONCURRENCY) --idle-seconds $(LOCAL_IDLE_SECONDS) \
	  --auth $(AUTH)

# No dependency on setup: stopping must never start an install. Without .venv nothing can be running.
local-down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python infra/local/stack.py down --dir $(LOCAL_DIR); \
	else echo "local stack not running (no $(BIN)/python)"; fi

# Exit status 0 even when the stack is down (`stack.py status` itself returns 1 then).
local-status:
	@if [ -x $(BIN)/python ]; then $(BIN)/python infra/local/stack.py status --dir $(LOCAL_DIR) || true; \
	else echo "local stack not running (no $(BIN)/python)"; fi
