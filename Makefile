# ferryman — see README.md. Every target sets itself up (idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
DEMO_DIR ?= .cache/demo

.PHONY: setup lock lint typecheck test test-unit test-integration test-cluster demo bench bench-quick bench-operator \
        loadtest soak cluster-up cluster-down images e2e crd monitoring chart-docs chart-check clean

setup:
	@bash scripts/setup.sh

lock:
	uv pip compile requirements/requirements.in -p 3.11 -o requirements/lock.txt

lint: setup
	$(VENV)/bin/ruff format --check platform runtimes operators tests loadtests scripts
	$(VENV)/bin/ruff check platform runtimes operators tests loadtests scripts

typecheck: setup
	$(VENV)/bin/mypy platform/ferryman runtimes/ferryman_runtimes operators/ferryman_operator tests loadtests

test: setup lint typecheck
	$(PYTEST) tests/unit tests/integration tests/cluster tests/e2e -q

test-unit: setup
	$(PYTEST) tests/unit -q

test-integration: setup
	$(PYTEST) tests/integration -q

test-cluster: setup
	$(PYTEST) tests/cluster -q

# end-to-end on the real node: builds the cluster and images on first use (see docs/cluster.md)
e2e: setup
	$(PYTEST) tests/e2e -q

demo: setup
	$(VENV)/bin/ferryman demo --dir $(DEMO_DIR)

bench: setup
	$(PY) -m loadtests.bench --out docs/benchmarks.md

# the operator at N = 10, 100, 300, 1,000 ModelDeployments, each on a fresh KWOK-only control plane (~25 min)
bench-operator: setup
	$(PY) -m loadtests.operator_scale --out docs/operator-scale.md --json docs/operator-scale.json

bench-quick: setup
	$(PY) -m loadtests.bench --quick --out docs/benchmarks.md

loadtest: setup
	$(PY) -m loadtests.run_local

soak: setup
	$(PY) -m loadtests.soak --minutes 10 --out docs/soak.md

cluster-up: setup
	bash scripts/cluster/up.sh

cluster-down:
	bash scripts/cluster/down.sh

# builds the runtime and operator images locally and loads them into the running node
images: setup
	bash scripts/images/build.sh

monitoring: setup
	$(VENV)/bin/ferryman dashboards export monitoring/dashboards
	$(VENV)/bin/ferryman alerts export monitoring/alerts

crd: setup
	$(VENV)/bin/ferryman crd -o operators/ferryman_operator/crd/modeldeployments.yaml

chart-docs: setup
	bash scripts/chart-sync.sh

chart-check: setup
	bash scripts/chart-sync.sh --check

clean:
	rm -rf .cache build *.egg-info .pytest_cache .mypy_cache .ruff_cache
