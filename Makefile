# One-command dev loop. Each target sets up .venv from the project's own files first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_DIR ?= demo-store

.PHONY: demo test test-all lint bench bench-full reliability clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,test-integrations]'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)  ## build a store from sample_data/ and walk through it
	$(VENV)/bin/convstore demo $(DEMO_DIR)

test: $(STAMP)  ## the suite CI runs (short forms of the stress tests)
	$(PY) -m pytest -q

test-all: $(STAMP)  ## also the slow tests (long kill loops, big stores)
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check convstore tests benchmarks sample_data
	$(VENV)/bin/mypy

bench: $(STAMP)  ## quick benchmark against the peers (about a minute)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	$(PY) -m benchmarks.bench --quick

bench-full: $(STAMP)  ## 10k, 100k and 1M messages (up to 15 minutes)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	$(PY) -m benchmarks.bench --full

reliability: $(STAMP)  ## the long reliability campaign
	$(PY) -m benchmarks.reliability --minutes 10

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
