# Two commands do all set-up on a fresh machine: `make demo` (a real task stream) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test clean

install: $(VENV)/.installed

# torch 2.13.0 first: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: install
	$(VENV)/bin/cadapt run-scenario scenarios/demo.yaml --registry registry.db

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
