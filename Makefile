# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# With no configuration at all, `make run` is a dev install: secrets generated under ./var/.
export SYNC_MODE ?= dev

.PHONY: run test lint install openapi bench clean

$(BIN)/moodle-sync: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/moodle-sync

run: install
	$(BIN)/moodle-sync migrate
	$(BIN)/moodle-sync serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check app tests migrations bench
	$(BIN)/ruff format --check app tests migrations bench

openapi: install
	$(BIN)/moodle-sync openapi > openapi/openapi.json

clean:
	rm -rf $(VENV) var

bench: install
	$(BIN)/python -m bench.run
