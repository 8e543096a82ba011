# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU build of torch first (it lies on this machine's disk); see README for CUDA.
TORCH_SPEC ?= torch==2.13.0
OUT ?= fracsurv-demo

.PHONY: demo test test-slow lint bench clean venv

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fracsurv demo --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check fracsurv tests benchmarks examples

bench: $(STAMP)
	$(PY) -m pip install -e ".[dev,bench]"
	$(PY) benchmarks/survival_real.py
	$(PY) benchmarks/cox_loss.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
