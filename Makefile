# One-command set-up for newcomers and CI. torch is pinned: an unpinned install pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
DEMO_OUT ?= demo_out

.PHONY: setup lint test demo bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# ruff (rules in pyproject.toml; checks only, never rewrites files) and mypy (its file list is
# pyproject.toml's [tool.mypy] files).
lint: setup
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/ditr demo --quick --out $(DEMO_OUT)
	$(VENV)/bin/ditr project $(DEMO_OUT)/rooms/room_0000 --out $(DEMO_OUT)/corr.npz --render $(DEMO_OUT)/overlays
	@echo "Results in $(DEMO_OUT)/results.json; pictures: $(DEMO_OUT)/*.png and $(DEMO_OUT)/overlays/"

bench: setup
	$(PY) benchmarks/projection.py
	$(PY) benchmarks/features.py --quick
	$(PY) benchmarks/lifting.py --quick
	$(PY) benchmarks/ptv3.py --quick

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info src/*.egg-info
