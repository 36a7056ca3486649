# tff_fl: every target bootstraps .venv with the pinned stack first (see BUILD_NOTES.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TFF_VERSION := 0.87.0
# Tests and runs must never inherit a random thread layout; see BUILD_NOTES.md.
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONHASHSEED ?= 0

.PHONY: venv run test data benchmark reproduce clean

venv: $(STAMP)

$(STAMP): requirements/lock.txt requirements/constraints.txt requirements/nodeps.txt setup.cfg
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==23.2.1" "setuptools==68.2.2"
	$(PY) -m pip install --quiet -c requirements/constraints.txt -r requirements/lock.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check || true
	$(PY) -c "import tensorflow_federated as t, numpy, scipy; assert t.__version__ == '$(TFF_VERSION)'; assert numpy.__version__ == '1.25.2'; assert scipy.__version__ == '1.9.3'"
	touch $(STAMP)

run: venv
	$(PY) -m experiments.train --flagfile=experiments/configs/default.flags

# Two pytest-xdist workers (the machines have 2 cores; most of a test is single-threaded TF tracing).
TEST_WORKERS ?= 2
test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=25 tests

data: venv
	bash experiments/fetch_data.sh

benchmark: venv  # Pinned to one core (the TFF worker inherits it): stock TFF and ours compete for the same core.
	taskset -c 0 $(PY) -m experiments.benchmark

# Paper baselines: make reproduce SUITE=fedprox2020 (mcmahan2017, mcmahan2017_lr, fedprox2020, shakespeare, niid_bench).
SUITE ?= mcmahan2017
reproduce: venv
	$(PY) -m experiments.reproduce --suite=$(SUITE)

# Results tables in experiments/results/: make report-pruning (robustness, privacy, stateful, hierarchical, pruning).
report-%: venv
	$(PY) -m experiments.$*_report

clean:
	rm -rf $(VENV) build *.egg-info
