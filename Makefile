# StraightLine build. The two commands a user needs: `make demo` and `make test`.
# Both set up the environment first when it is missing or out of date.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
STUBS := libs/common/straightline/v1
# MLServer (tests only) pins protobuf below 7: a virtual environment of its own.
MLSERVER_VENV := .venv-mlserver
PROTOS := $(wildcard protos/straightline/v1/*.proto)
OIP_PROTOS := protos/oip/inference/open_inference_grpc.proto
# Type-checked by `make lint` (pyproject.toml: [tool.mypy]).
TYPED := libs/common/straightline_common services/placer/straightline_placer \
	services/inference/straightline_inference services/devrunner/straightline_devrunner

.PHONY: setup proto lint format images test test-fast bench bench-inference bench-batching bench-callers bench-peers evaluate demo clean

setup: $(VENV)/.installed $(STUBS)/.generated $(BUF) $(MLSERVER_VENV)/.installed

$(VENV)/.installed: constraints.txt requirements-dev.txt requirements-clients.txt $(wildcard */*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -c constraints.txt -r requirements-clients.txt
	touch $@

$(MLSERVER_VENV)/.installed: requirements-mlserver.txt
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/python -m pip install --quiet -r requirements-mlserver.txt
	touch $@

# Generated stubs import each other by package path (straightline.v1.*, inference.*), as
# protoc writes them. The Open Inference Protocol is its own proto root (protos/oip).
proto $(STUBS)/.generated: $(PROTOS) $(OIP_PROTOS) $(VENV)/.installed
	rm -rf libs/common/straightline libs/common/inference
	mkdir -p libs/common
	$(PY) -m grpc_tools.protoc -I protos --python_out=libs/common --pyi_out=libs/common \
		--grpc_python_out=libs/common $(PROTOS)
	$(PY) -m grpc_tools.protoc -I protos/oip --python_out=libs/common --pyi_out=libs/common \
		--grpc_python_out=libs/common $(OIP_PROTOS)
	touch $(STUBS)/.generated

$(BUF): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

lint: setup
	$(BUF) lint protos
	scripts/buf-breaking.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(TYPED)

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The model-server and Lambda images (from a local base when no registry can be reached).
images: setup
	deploy/images/build.sh

# The whole suite: lint, the images when a Docker engine answers, then every test (without an
# engine the Docker tests are skipped, unless STRAIGHTLINE_REQUIRE_DOCKER=1).
test: lint
	@if docker info >/dev/null 2>&1; then $(MAKE) --no-print-directory images; fi
	$(VENV)/bin/pytest --durations=20

# The fast loop: no Docker engine, no TensorFlow.
test-fast: setup
	$(VENV)/bin/pytest -m "not docker and not tensorflow"

bench: setup
	$(PY) -m bench.placer_bench
	$(PY) -m bench.idle_wakeup

bench-inference: images
	$(PY) -m bench.inference_bench

bench-batching: setup
	$(PY) -m bench.batching_bench

bench-callers: setup
	$(PY) -m bench.callers_bench

bench-peers: setup
	$(PY) -m bench.peers

evaluate: images
	$(PY) -m bench.harness
	$(PY) -m bench.harness.crosscheck

demo: setup
	$(PY) -m scripts.demo

clean:
	rm -rf $(VENV) $(MLSERVER_VENV) node_modules libs/common/straightline libs/common/inference
