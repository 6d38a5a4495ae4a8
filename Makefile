# The two commands of the README: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-zoo lint bench clean

demo: $(STAMP)
	$(BIN)/effkit compress

# In parallel workers (pytest-xdist; each module runs on one worker, so its fixtures are made once), one more than
# the cores, since workers also wait on subprocesses, Ray and each other's shared fixtures; in random order
# (pytest-randomly prints the seed; --randomly-seed=N repeats an order), with the slowest tests listed.
WORKERS ?= $(shell $(PYTHON) -c 'import os; print((os.cpu_count() or 1) + 1)')

test: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadscope --durations=15

# The development loop: everything but the tests marked slow (reference-model training, end-to-end subprocesses).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadscope -m "not slow and not zoo"

# Every keras.applications family through the bridge and both exports (about 8 minutes; not part of make test).
test-zoo: $(STAMP)
	$(BIN)/python -m pytest -m zoo

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/compress_default.py
	$(BIN)/effkit bench bench/suites/quick.toml --out results --baseline bench/baselines/quick.json

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) effkit-out .pytest_cache
