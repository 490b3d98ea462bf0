# Every target installs the environment first when .venv is missing, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo lint format bench-train bench-sampler bench-data clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	WANDB_MODE=offline WANDB_SILENT=true $(BIN)/pytest -q

# skip the slow end-to-end CLI runs
test-fast: $(STAMP)
	WANDB_MODE=offline WANDB_SILENT=true $(BIN)/pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/python -m lesion_lightning.pipeline preset=quickstart

lint: $(STAMP)
	$(BIN)/ruff check lesion_lightning tests
	$(BIN)/ruff format --check lesion_lightning tests

format: $(STAMP)
	$(BIN)/ruff format lesion_lightning tests
	$(BIN)/ruff check --fix lesion_lightning tests

bench-train: $(STAMP)
	$(BIN)/python -m lesion_lightning.bench train

bench-sampler: $(STAMP)
	$(BIN)/python -m lesion_lightning.bench sampler

bench-data: $(STAMP)
	$(BIN)/python -m lesion_lightning.bench data

clean:
	rm -rf logs outputs multirun .pytest_cache .ruff_cache
