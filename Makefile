# Two commands on a fresh machine: `make serve` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test install lint bench clean

$(STAMP): pyproject.toml constraints.txt kvstream/protocol/_walk.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/kvstream serve --override listeners=PLAINTEXT://127.0.0.1:9092 --override log.dirs=./kvstream-data

# System packages the tests need (kcat from Debian: librdkafka 2.0.2, the oldest client we support).
system-deps:
	@command -v kcat >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq kcat; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq kcat; fi; }

lint: $(STAMP)
	$(VENV)/bin/ruff check kvstream tests tools
	$(VENV)/bin/ruff format --check kvstream tests tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: system-deps $(STAMP) lint
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(PY) tools/bench.py

clean:
	rm -rf $(VENV) kvstream-data
