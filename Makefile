# Two commands do all set-up on a fresh machine (see README.md):
#   make demo   profile -> predictor -> search -> export on the embedded defaults (CPU)
#   make test   the test suite (what CI runs)
# Both create .venv first.  torch is installed on its own so that a machine without a GPU
# gets the CPU wheel: set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu where the
# default index would give the CUDA build (on this project's machines the CPU wheel of
# torch 2.13.0 is found locally).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
TORCH_INDEX := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)

.PHONY: setup demo test test-fast clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

demo: setup
	$(BIN)/hwnas demo $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
