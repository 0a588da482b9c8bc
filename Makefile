# One-command set-up for newcomers and CI. torch is pinned: an unpinned install pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
DEMO_OUT ?= demo_out

.PHONY: setup test demo bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/ditr synth $(DEMO_OUT)/rooms --scenes 1 --seed 0
	$(VENV)/bin/ditr inspect $(DEMO_OUT)/rooms/room_0000
	$(VENV)/bin/ditr project $(DEMO_OUT)/rooms/room_0000 --out $(DEMO_OUT)/corr.npz --render $(DEMO_OUT)/overlays
	$(VENV)/bin/ditr features $(DEMO_OUT)/rooms/room_0000 --model dinov2-tiny-random-reg --cache $(DEMO_OUT)/features --flip --render $(DEMO_OUT)/features_pca
	@echo "Overlays in $(DEMO_OUT)/overlays, feature PCA pictures in $(DEMO_OUT)/features_pca"

bench: setup
	$(PY) benchmarks/projection.py
	$(PY) benchmarks/features.py --quick
	$(PY) benchmarks/ptv3.py --quick

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info src/*.egg-info
