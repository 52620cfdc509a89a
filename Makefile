# Two commands from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The test suite checks the TensorFlow, JAX and PyTorch backends on the CPU;
# pinning torch keeps pip from fetching a multi-GB CUDA build for that.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?= -n 2

.PHONY: help demo test install clean

help:
	@echo "make demo   - create $(VENV), install DeFaX-Keras, train and evaluate defax_nano on the demo set"
	@echo "make test   - create/update $(VENV) with the dev extra and run the tests"
	@echo "make clean  - remove $(VENV) and build artefacts"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install "$(TORCH_SPEC)" -e ".[dev,jax,torch]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

# Generates the demo set (cached), trains defax_nano on it from random
# initialisation, evaluates on its test split and prints the metrics.
demo: $(VENV)/.installed
	$(BIN)/defax data demo
	$(BIN)/defax train --config configs/demo.yaml

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
