# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU build of torch first (it lies on this machine's disk); see README for CUDA.
TORCH_SPEC ?= torch==2.13.0
OUT ?= fracsurv-demo

.PHONY: demo test test-slow lint bench clean venv gpu-wheels docs

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev,dist,pacs]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fracsurv demo --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The docs site (site/): docs/, the docstrings and the examples, each run once.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --site-dir site

lint: $(STAMP)
	$(VENV)/bin/ruff check fracsurv tests benchmarks examples

bench: $(STAMP)
	$(PY) -m pip install -e ".[dev,bench]"
	$(PY) benchmarks/survival_real.py
	$(PY) benchmarks/cox_loss.py

# Wheels benchmarks/gpu_check.sh installs on a GPU machine that has CUDA torch but
# lacks these (carry benchmarks/.wheels there; see docs/diffx_generator.md).
GPU_WHEELS ?= diffusers skorch monai safetensors einops huggingface-hub pydicom \
	scikit-image scikit-survival lifelines tqdm tabulate joblib threadpoolctl
gpu-wheels: $(STAMP)
	$(PY) -m pip wheel -q --no-deps -w benchmarks/.wheels . $(GPU_WHEELS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
