# Two commands do all set-up: `make demo` (tiny model, generated data, end to end) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# Parity oracle for tests/parity (test-only): Lightricks' own packages, without their torch/torchaudio pins.
	$(BIN)/python -m pip install --quiet --no-deps ltx-core==1.0.0 ltx-pipelines==1.0.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m ltxlab

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python tools/bench_step.py

clean:
	rm -rf outputs multirun cache wandb .pytest_cache
