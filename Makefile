# One-command set-up for newcomers and CI (docs/install.md). torch is pinned; scripts/install_torch.py
# installs its CPU build where there is no NVIDIA GPU (PyPI's Linux torch is the multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# auto: the CPU build without an NVIDIA GPU, else the CUDA build; cpu or cuda to choose.
TORCH_BUILD ?= auto
# a wheel index to take torch from instead, e.g. https://download.pytorch.org/whl/cu126 (docs/install.md)
TORCH_INDEX ?=
DEMO_OUT ?= demo_out

.PHONY: setup lint test demo bench clean

$(VENV)/.installed: pyproject.toml Makefile scripts/install_torch.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) scripts/install_torch.py --torch-version $(TORCH_VERSION) --build $(TORCH_BUILD) \
		$(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# ruff (rules in pyproject.toml; checks only, never rewrites files) and mypy (its file list is
# pyproject.toml's [tool.mypy] files).
lint: setup
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/ditr demo --quick --out $(DEMO_OUT)
	$(VENV)/bin/ditr project $(DEMO_OUT)/rooms/seed_0/room_0000 --out $(DEMO_OUT)/corr.npz --render $(DEMO_OUT)/overlays
	@echo "Results in $(DEMO_OUT)/results.json; pictures: $(DEMO_OUT)/*.png and $(DEMO_OUT)/overlays/"

bench: setup
	$(PY) benchmarks/projection.py
	$(PY) benchmarks/features.py --quick
	$(PY) benchmarks/lifting.py --quick
	$(PY) benchmarks/ptv3.py --quick

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info src/*.egg-info
