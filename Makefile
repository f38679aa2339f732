# The two commands a fresh machine needs: `make run` and `make test`. Both create the virtual
# environment on first use; nothing else has to be installed beforehand but Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/linjerum run $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest $(ARGS)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Each script takes options of its own (--help); run one directly to pass them.
bench: $(STAMP)
	$(BIN)/python bench/eventstore.py
	$(BIN)/python bench/reads.py
	$(BIN)/python bench/onsale.py
	$(BIN)/python bench/tickets.py
	$(BIN)/python bench/pdf_render.py
	$(BIN)/python bench/embeds.py

clean:
	rm -rf $(VENV) .linjerum .pytest_cache .ruff_cache
