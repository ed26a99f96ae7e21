# ocpp-router — every target sets up what it needs on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
EXT_SOURCES := $(shell find ext -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h')
BUILT  := $(VENV)/.built

.PHONY: all venv build system-deps test test-only lint run compliance fuzz bench clean

all: build

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel "cython>=3.0.10"
	$(PIP) install -q --no-build-isolation -e '.[test,bench,dev]'
	touch $@

venv: $(STAMP)

$(BUILT): $(STAMP) $(EXT_SOURCES) setup.py
	$(PY) setup.py -q build_ext --inplace -j 2
	touch $@

build: $(BUILT)

lint: $(BUILT)
	$(VENV)/bin/ruff check router tests bench
	$(VENV)/bin/mypy
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/cython-lint ext   # it runs pycodestyle from PATH

# Debian packages the tests start for real (Redis 7, haproxy, podman, clang).
system-deps:
	scripts/system-deps.sh

test: system-deps $(BUILT) lint
	$(PY) -m pytest -n 2 -q -p no:cacheprovider $(PYTEST_ARGS)

# Run the test suite without the lint step (quicker while iterating).
test-only: $(BUILT)
	$(PY) -m pytest -n 2 -q -p no:cacheprovider $(PYTEST_ARGS)

run: $(BUILT)
	$(VENV)/bin/ocpp-router dev $(DEV_ARGS)

compliance: $(BUILT)
	$(PY) -m tests.compliance --groups all --report bench/results/autobahn

fuzz: $(BUILT)
	$(PY) -m tests.fuzz --seconds $${FUZZ_SECONDS:-600}

bench: $(BUILT)
	$(PY) -m bench.run --standard

# Container image (docs/kubernetes.md). Without a registry, the bases come from
# Debian packages (mmdebstrap, cached); with one, e.g.
#   make image BASE_IMAGE=docker.io/library/python:3.12-slim-bookworm BUILD_IMAGE=docker.io/library/python:3.12-bookworm
.PHONY: base-image
base-image: system-deps
	deploy/podman/base-image.sh

.PHONY: image
image: system-deps
	@if [ -z "$(BASE_IMAGE)" ]; then deploy/podman/base-image.sh; fi
	deploy/podman/build-image.sh localhost/ocpp-router:dev

# values.schema.json's `config` section from router/config.py's OPTIONS (a test checks it).
.PHONY: chart-schema
chart-schema: $(BUILT)
	$(PY) -m scripts.chart_schema

# The image's figures for bench/RESULTS.md: size, start to ready, drain of N chargers.
.PHONY: bench-image
bench-image: $(BUILT) system-deps
	$(PY) -m tests.deploy.measure --chargers $${CHARGERS:-1000} --drain-seconds $${DRAIN_SECONDS:-10}

clean:
	rm -rf build $(VENV) *.egg-info
	find router ext -name '*.so' -delete
	find ext -name '*.c' -delete

.PHONY: bench-soap
bench-soap: $(BUILT)
	$(PY) bench/bench_soap.py --json bench/results/soap.raw.json

# Backend SDK against the fast responder and the reference CSMS (issue 14);
# SDK_BASE: the revision whose SDK is the baseline (the last one before the
# SDK's compiled data path), measured in the same run.
SDK_BASE ?= 94de591
.PHONY: bench-sdk
bench-sdk: $(BUILT)
	$(PY) -m bench.run --scenario sdk --sdk-base $(SDK_BASE) --no-plots --quiet
