# The two commands a fresh machine needs: `make run` and `make test`. Both create the virtual
# environment on first use; nothing else has to be installed beforehand but Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCKS := requirements/prod.lock requirements/dev.lock
ARGS ?=

.PHONY: run test lint format bench lock clean

# Pinned versions with hashes: requirements/dev.lock (the production image installs prod.lock),
# then the project itself without resolving anything again.
$(STAMP): pyproject.toml $(LOCKS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
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
	$(BIN)/python bench/onsale.py --rounds 3
	$(BIN)/python bench/tickets.py
	$(BIN)/python bench/pdf_render.py
	$(BIN)/python bench/embeds.py
	$(BIN)/python bench/paid_orders.py --rounds 3
	$(BIN)/python bench/snapshots.py

# Regenerates both lock files from pyproject.toml, keeping the pins that still fit; pass
# ARGS=--upgrade to move every package to its newest version. prod.lock takes dev.lock's pins,
# so the image runs the versions the tests ran.
UV_COMPILE := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--no-header --annotation-style line
lock: $(STAMP)
	$(UV_COMPILE) $(ARGS) pyproject.toml --extra dev -o requirements/dev.lock
	$(UV_COMPILE) pyproject.toml -c requirements/dev.lock -o requirements/prod.lock

clean:
	rm -rf $(VENV) .linjerum .pytest_cache .ruff_cache
