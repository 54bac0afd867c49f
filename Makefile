# SQUASH — front door. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: help setup tools data datasets test lint openapi demo bench bench-stack bench-faults bench-load bench-writes bench-highcard bench-wire bench-econ bench-build clean

help:
	@echo "make setup   create .venv and install pinned dependencies"
	@echo "make demo    local stack up, build Fashion-MNIST (or synthetic) into it, query over HTTP, stop"
	@echo "make test    lint + the whole test suite"
	@echo "make bench   squash vs numpy/FAISS/LanceDB, planner on real sets, 1M scale, cost, faults, load, writes, HTTP wire vs in-process (~45 min)"
	@echo "make datasets   real text-embedding and MNIST sets for the planner bench (~50 min, cached)"
	@echo "make bench-stack   local-stack latency/throughput -> bench/results/stack.json"
	@echo "make bench-faults  fault injection on the local stack -> bench/results/faults.json (~5 min)"
	@echo "make bench-load    bounded load test on the local stack -> bench/results/load.json (~1.5 min)"
	@echo "make bench-writes  upserts/s, QPS and recall with 0/1/10 % of rows in deltas and after compact (~5 min)"
	@echo "make bench-wire    JSON vs binary wire: body parsing, HTTP batch QPS (~3 min) -> bench/results"
	@echo "make bench-econ    invoke overhead on the local stack, invocations counted, \$$/M, simulated trees 1-1,024 nodes (~15 min; first run builds 1M x 128, +8 min)"
	@echo "make bench-highcard  1M- and 200k-distinct string filters through the local stack (~10 min)"
	@echo "make bench-build   streaming builds: 2M x 64 and 10M x 128 .npy, wall time and peak RSS (~40 min)"
	@echo "make openapi  regenerate functions/coordinator/openapi.json from the coordinator's models"
	@echo "make local-up / local-down   start / stop the Docker-free local stack (.local/)"
	@echo "make template-lint / sam-build / package-size   check, build and size the SAM app"

setup: $(BIN)/.installed

# SAM CLI and cfn-lint pin their own boto3, so they live in a second virtualenv. The SAM wheel
# also carries AWS's Lambda Runtime Interface Emulator, which the local stack runs.
TOOLS := .venv-tools
tools: $(TOOLS)/.installed

$(TOOLS)/.installed: infra/tools-requirements.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet -r infra/tools-requirements.txt
	touch $@

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cli,lambda,dev,bench]'
	touch $@

# Fashion-MNIST comes from Debian; without root (or apt) the demo falls back to synthetic data.
data:
	@if [ ! -d $(FMNIST) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	      || echo "warning: could not install dataset-fashion-mnist"; \
	  else echo "note: Fashion-MNIST absent (sudo apt-get install dataset-fashion-mnist); using synthetic data"; fi; \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup tools data lint template-lint
	$(BIN)/pytest -q

# The OpenAPI document the coordinator serves at GET /openapi.json, committed (a test checks it).
openapi: setup
	$(BIN)/python infra/openapi.py

# The demo runs the serverless path on the local stack (RIE comes from the tools venv).
demo: setup tools data
	$(BIN)/python infra/demo.py

# Real datasets for the planner benchmark (bench/data/README.md), cached outside the repo in
# ~/.cache/squash-datasets: all-MiniLM-L6-v2 text embeddings (run offline) and MNIST digits.
EMBED := .venv-embed
datasets: setup
	@test -x $(EMBED)/bin/python || $(PYTHON) -m venv $(EMBED)
	$(EMBED)/bin/pip install --quiet torch==2.13.0
	$(EMBED)/bin/pip install --quiet -c bench/data/embed-requirements.txt -r bench/data/embed-requirements.txt
	$(EMBED)/bin/python bench/data/make_datasets.py

bench: setup data
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python bench/run.py
	$(MAKE) bench-faults bench-load bench-writes bench-wire bench-econ bench-build

# Streaming builds of 2M x 64 and 10M x 128 synthetic .npy files (about 40 min; 6 GB of disk).
bench-build: setup
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/build_scale.py --out bench/results

# Issue #14's economics: per-invoke overhead on a local stack of its own (loopback, stopped at
# the end) -> invoke_overhead.json; then invocations counted from the runtime's stats on the
# SIFT1M-sized index (cached in ~/.cache/squash-bench), $ per million and simulated trees of
# 1-1,024 nodes for 1M- and 10M-sized indexes -> econ.json, ECON.md, econ.png.
bench-econ: setup tools
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/invoke_overhead.py --out bench/results
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/econ.py --out bench/results

# Fault injection and load on a local stack of their own (loopback only, stopped at the end).
bench-writes: setup tools
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/writes.py --out bench/results
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/writes_http.py --out bench/results

bench-highcard: setup tools
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/highcard.py --out bench/results

bench-faults: setup tools
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/faults.py --runs 5 --out bench/results

bench-load: setup tools
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/load.py --clients 24 --seconds 40 --out bench/results

# Local-stack latency and throughput (trees 4,1 / 2,2 / 4,2) -> bench/results/stack.json,
# which the next `make bench` report includes (or: bench/run.py --only report).
bench-stack: setup tools data
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/stack_latency.py --out bench/results
	$(MAKE) bench-wire

# The HTTP API's two encodings: 1000 x 784 body parsing, then batch QPS through the local stack.
bench-wire: setup tools data
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/http_parse.py --out bench/results
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/wire_http.py --out bench/results

# Local stack (local-up / local-down / local-status) and SAM (template-lint, sam-build,
# package-size, localstack-*) targets.
include infra/local/local.mk
include infra/sam.mk

clean:
	rm -rf .local .aws-sam .pytest_cache .ruff_cache .hypothesis
