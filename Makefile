# vcfnb — the two commands are `make reproduce` and `make test`; `make help` lists everything.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vcfnb-installed
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k stats"`.
PYTEST_ARGS ?=
# Notebooks `make reproduce` runs at a time (longest first), e.g. `make reproduce LANES=1`.
LANES ?= 1

.PHONY: help env lint test test-heavy test-fast reproduce lab cohorts benchmark null-coverage clean clean-reports

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "vcfnb needs Python >= 3.11, found " + sys.version)'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name vcfnb --display-name "vcfnb (Python 3)" > /dev/null
	@touch $(STAMP)
	@echo "environment ready: $(VENV) (kernel 'vcfnb')"

env: $(STAMP) ## create or update the .venv environment (reused when up to date)

lint: $(STAMP) ## ruff over vcfnb/, tests/, notebooks/, benchmarks/; import-linter contracts (pyproject.toml)
	$(VENV)/bin/ruff check vcfnb tests notebooks benchmarks tools
	$(VENV)/bin/lint-imports

test: lint ## lint, then the whole test suite: doctests, unit, integration, real data (when ../shared/data exists), nbval on every notebook
	MPLBACKEND=Agg $(PY) -m pytest vcfnb tests notebooks --doctest-modules --nbval-lax --nbval-kernel-name vcfnb -m "not heavy" -p no:cacheprovider $(PYTEST_ARGS)

test-heavy: $(STAMP) ## the heaviest integration tests (notebook negative controls, equivalence runs, real-data worked example); .ci/run runs them after `make test`
	MPLBACKEND=Agg $(PY) -m pytest tests -m heavy -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP) ## unit tests only (no notebooks, no papermill runs)
	MPLBACKEND=Agg $(PY) -m pytest tests -m "not slow" -p no:cacheprovider $(PYTEST_ARGS)

reproduce: $(STAMP) ## run every study notebook with every params/<study>/*.yaml into reports/ (LANES at a time)
	$(PY) -m vcfnb.runner reproduce --lanes $(LANES)

cohorts: $(STAMP) ## generate the built-in simulated cohorts (smoke and paper sizes) into data/cohorts
	$(PY) -m vcfnb.runner cohorts

lab: $(STAMP) ## open JupyterLab in this environment (kernel 'vcfnb', the one papermill uses)
	$(VENV)/bin/jupyter lab notebooks

benchmark: $(STAMP) ## run the benchmark scripts (ratios against baselines measured in the same run)
	for b in benchmarks/[a-z]*.py; do case $$b in *null_coverage.py|*split_latent.py) continue;; esac; $(PY) $$b || exit 1; done

null-coverage: $(STAMP) ## CI coverage of AUC 0.5 on 30 signal-0 seeds per study (hours; not in `make benchmark`)
	$(PY) benchmarks/null_coverage.py --seeds 30 --out benchmarks/results/null_coverage.csv

clean-reports: ## delete reports/
	rm -rf reports

clean: clean-reports ## delete reports/, data/ (generated cohorts, feature cache) and .venv
	rm -rf data $(VENV)
