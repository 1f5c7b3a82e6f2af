# Two commands on a fresh machine: `make up` runs the platform, `make test` passes the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint imports format bench install clean test-scale

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/chatlake up

# two workers (the machine's two cores), a test file each at a time; the scale-out
# engines' variants (marker `scale`) run in a target of their own, also called by CI
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not scale"

test-scale: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m scale

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# the layers contract alone (pyproject.toml [tool.importlinter]); CI runs it after the tests
imports: $(STAMP)
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/chatlake bench realtime

clean:
	$(BIN)/chatlake services stop || true
	rm -rf .chatlake
