# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On a Jetson make the venv with `make setup VENV_FLAGS=--system-site-packages EXTRAS=dev`
# so the system OpenCV (with GStreamer) and TensorRT are seen instead of pip wheels.
VENV_FLAGS ?=
EXTRAS ?= tflite,onnx,console,dev
# Tests run in parallel-safe order; the suite must stay under 15 minutes on 2 cores.
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench check-arm64 clean

$(PY):
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

setup: $(PY)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(PY) tools/fetch_assets.py

demo: setup
	$(VENV)/bin/edge-agent demo

test: setup
	$(PY) tools/run_tests.py $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check agent tests tools
	$(VENV)/bin/ruff format --check agent tests tools
	$(VENV)/bin/mypy agent tools

bench: setup
	$(VENV)/bin/edge-agent bench --json

# The user's install on arm64 Debian bookworm under qemu (root; debootstrap, qemu-user-static):
# ~5 min to build the root the first time, ~2.5 min after (docs/boards/arm64-check.md).
check-arm64: setup
	PYTHON=$(PY) bash tools/check_arm64.sh

clean:
	rm -rf $(VENV) assets .mypy_cache .ruff_cache .pytest_cache
