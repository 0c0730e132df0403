# The two commands a fresh machine needs: `make demo` and `make test`.
# Both create the virtual environment and install everything on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned: a loose range would let pip fetch a newer
# multi-GB build. Override for another platform, e.g. TORCH="torch==2.9.1 torchvision==0.24.1".
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed-stamp
DATA := data/scenes
QUICKSTART := configs/experiments/quickstart.yaml

.PHONY: install demo test lint format data clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

data: $(DATA)/classes.json

$(DATA)/classes.json: | $(STAMP)
	$(BIN)/vlp data --out $(DATA) --format jsonl

demo: $(STAMP) $(DATA)/classes.json
	$(BIN)/vlp fit --config $(QUICKSTART)
	$(BIN)/vlp test --config $(QUICKSTART) --ckpt_path runs/quickstart/checkpoints/last.ckpt

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf runs $(DATA)
