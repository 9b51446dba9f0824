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
	$(BIN)/mypy

openapi: install
	$(BIN)/moodle-sync openapi > openapi/openapi.json

clean:
	rm -rf $(VENV) var

# Benchmark 1's load comes from wrk (a compiled HTTP load generator); installed here when it is missing.
bench: install
	@command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench.run
