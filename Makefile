# ocpp-router — every target sets up what it needs on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
EXT_SOURCES := $(shell find ext -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h')
BUILT  := $(VENV)/.built

.PHONY: all venv build system-deps test test-only lint run compliance fuzz bench clean
.PHONY: fuzz-long fuzz-minimize
.PHONY: chaos
.PHONY: soak
.PHONY: scale

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

# Coverage-guided fuzzing of the compiled parsers (clang ASan/UBSan build in
# build/fuzz, see tests/fuzz/): every target FUZZ_SECONDS each (short, CI).
fuzz: $(BUILT)
	$(PY) -m tests.fuzz --seconds $${FUZZ_SECONDS:-60}

# Every target for FUZZ_RUNS executions (or FUZZ_MAX_SECONDS, if that comes
# first); figures into bench/RESULTS.md. Niced: it runs for hours.
fuzz-long: $(BUILT)
	nice -n 19 $(PY) -m tests.fuzz --runs $${FUZZ_RUNS:-10000000} \
	  --seconds $${FUZZ_MAX_SECONDS:-0} --corpus build/fuzz/corpus \
	  --results bench/results/fuzz.json --results-md bench/RESULTS.md

# After fuzz-long: what its corpora reached beyond the seeds, minimized
# (libFuzzer -merge=1), into tests/fuzz/grown/ (commit it: every fuzz run
# starts from there and make test replays it).
fuzz-minimize: $(BUILT)
	$(PY) -m tests.fuzz --minimize build/fuzz/corpus

# Faults under load (bench/chaos.py): a router node, a backend, Redis killed,
# Redis frozen; 2,000 chargers through haproxy. Figures: bench/results/chaos.json.
chaos: $(BUILT)
	$(PY) -m bench.chaos --chargers $${CHAOS_CHARGERS:-2000}

# Soak (bench/soak.py): chargers reconnecting every ~20 s, a CALL every ~2 s;
# SOAK_SECONDS (default one hour). Figures and plot: bench/results/soak.*.
soak: $(BUILT)
	$(PY) -m bench.soak --seconds $${SOAK_SECONDS:-3600}

# 100,000 booted chargers on this machine (bench/scale.py): memory per idle
# charger, kernel share, drops over SCALE_HOLD seconds of keepalive.
scale: $(BUILT)
	$(PY) -m bench.scale --chargers $${SCALE_CHARGERS:-100000} --hold $${SCALE_HOLD:-600}

bench: $(BUILT)
	$(PY) -m bench.run --standard

# Redis failover (Sentinel, SIGKILL of the master) and durability figures (issue 12)
.PHONY: bench-failover
bench-failover: $(BUILT)
	$(PY) -m bench.failover --trials $${FAILOVER_TRIALS:-5} --seconds $${FAILOVER_SECONDS:-10}

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

.PHONY: bench-cluster
# Redis Cluster figures (bench/RESULTS.md, "Redis Cluster"): router CPU per
# message with chargers standalone vs 3-master cluster (equal open-loop rate,
# then closed loop), outage/loss/duplicates after a master SIGKILL per
# durability, publisher-only CPU and throughput.
bench-cluster: $(BUILT)
	$(PY) -m bench.cluster router --rounds 5 --chargers 100 --rate 4000 --duration 8
	$(PY) -m bench.cluster router --rounds 3 --chargers 100 --duration 8
	$(PY) -m bench.cluster outage --trials 3
	$(PY) -m bench.cluster throughput --rounds 3 --entries 100000

clean:
	rm -rf build $(VENV) *.egg-info
	find router ext -name '*.so' -delete
	find ext -name '*.c' -delete

# The backend SDK's benchmark alone (issue 14): router + fast responder, SDK
# app with constant handlers, reference CSMS; SDK at 25/50/100 % load; then
# alternating rounds. SDK_BASELINE=<source tree> adds an older SDK to the rounds.
.PHONY: bench-sdk
bench-sdk: $(BUILT)
	$(PY) -m bench.run --scenario sdk --no-plots $(if $(SDK_BASELINE),--sdk-baseline $(SDK_BASELINE))

# Fleet figures of issue 13 (bench/RESULTS.md, "Fleet behaviour"): the rate
# limiter's CPU cost, neighbours' latency beside a flooding charger, scale-out
# 1 -> 2 -> 3 nodes with 10,000 chargers (round-robin and leastconn), and a
# reconnect storm of 20,000 chargers with and without admission control.
.PHONY: bench-fleet
bench-fleet: $(BUILT)
	$(PY) -m bench.fleet limiter
	$(PY) -m bench.fleet flood
	$(PY) -m bench.fleet scaleout --chargers 10000 --nodes 3 --balance roundrobin
	$(PY) -m bench.fleet scaleout --chargers 10000 --nodes 3 --balance leastconn
	$(PY) -m bench.fleet storm --chargers 20000 --admission both

.PHONY: bench-soap
bench-soap: $(BUILT)
	$(PY) bench/bench_soap.py --json bench/results/soap.raw.json

# Validation profiles: the strict path against main (A/B) and a relaxed message's cost.
.PHONY: bench-profiles
bench-profiles: $(BUILT)
	$(PY) bench/bench_profiles.py
	$(PY) -m bench.ab --base main --rounds 4 --duration 6
