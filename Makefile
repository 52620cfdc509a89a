# Two commands from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The test suite checks the TensorFlow, JAX and PyTorch backends on the CPU.
# PyPI's Linux `torch` wheel is the CUDA build (GBs of CUDA libraries), so
# PyTorch comes from its own CPU index by default. TORCH_INDEX= takes TORCH_SPEC
# from pip's usual indexes instead (a mirror or wheel folder that carries the
# CPU build, as CI's does); TORCH_SPEC= skips PyTorch, and its tests are skipped.
TORCH_SPEC ?= torch
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=25

COMPARE_MODELS ?= defax_nano facevit_nano fakevit_nano gsf_tfn_nano gsu_tfr_nano efficientnetv2_nano vgg16_nano resnet50_nano simple_cnn_nano
COMPARE_EPOCHS ?= 6
COMPARE_DIR ?= runs/compare-demo

.PHONY: help demo compare-demo test lint install clean

help:
	@echo "make demo   - create $(VENV), install DeFaX-Keras, train and evaluate defax_nano on the demo set"
	@echo "make compare-demo - train every model's small variant on the demo set, write the comparison table"
	@echo "make test   - create/update $(VENV) with the dev extra, run ruff and the tests"
	@echo "make lint   - ruff check (configured in pyproject.toml)"
	@echo "make clean  - remove $(VENV) and build artefacts"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev,jax,onnx,openvino,video]"
	$(if $(TORCH_SPEC),$(BIN)/python -m pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)")
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

# Generates the demo set (cached), trains defax_nano on it from random
# initialisation, evaluates on its test split and prints the metrics.
demo: $(VENV)/.installed
	$(BIN)/defax data demo
	$(BIN)/defax train --config demo

# Every model's small variant, same data and settings, then the paper's table.
compare-demo: $(VENV)/.installed
	rm -rf $(COMPARE_DIR)
	for model in $(COMPARE_MODELS); do \
		$(BIN)/defax train --config demo --model $$model --epochs $(COMPARE_EPOCHS) \
			--output $(COMPARE_DIR)/$$model || exit 1; \
	done
	$(BIN)/defax compare $(addprefix $(COMPARE_DIR)/,$(COMPARE_MODELS)) --output $(COMPARE_DIR)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
