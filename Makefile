# Two commands on a fresh machine: `make serve` and `make test` (see README.md).
#   make serve [PORT=9092] [DATA=./kvstream-data]   installs only what the broker needs
#   make test                                       installs the test and benchmark extras too
PYTHON ?= python3
VENV ?= .venv
PORT ?= 9092
DATA ?= ./kvstream-data
PY := $(VENV)/bin/python
SOURCES := pyproject.toml constraints.txt kvstream/protocol/_walk.c
# One stamp per install: the test install is a superset, so it marks both done.
SERVE_STAMP := $(VENV)/.installed-serve
TEST_STAMP := $(VENV)/.installed-test
INSTALL_LOG := $(VENV)/install.log
TEST_REQUIREMENT := .[test,bench]

.PHONY: serve test install lint bench clean system-deps

# $(call install_into_venv,<pip requirement>): create the venv if needed and install into it, quietly;
# the whole pip output goes to $(INSTALL_LOG) and is shown only when something fails.
install_into_venv = \
	{ test -x $(PY) || $(PYTHON) -m venv $(VENV); } && \
	{ $(PY) -m pip install --disable-pip-version-check --upgrade pip && \
	  $(PY) -m pip install --disable-pip-version-check -c constraints.txt -e '$(1)'; \
	} >$(INSTALL_LOG) 2>&1 || { cat $(INSTALL_LOG); echo "make: installing $(1) failed (log above)"; exit 1; }

$(SERVE_STAMP): $(SOURCES)
	@echo "Installing kvstream into $(VENV) (once; pip's log: $(INSTALL_LOG))"
	@$(call install_into_venv,.)
	@touch $(SERVE_STAMP)

$(TEST_STAMP): $(SOURCES)
	@echo "Installing kvstream with its test extras into $(VENV) (once; pip's log: $(INSTALL_LOG))"
	@$(call install_into_venv,$(TEST_REQUIREMENT))
	@touch $(TEST_STAMP) $(SERVE_STAMP)

install: $(TEST_STAMP)

serve: $(SERVE_STAMP)
	$(VENV)/bin/kvstream serve --override listeners=PLAINTEXT://127.0.0.1:$(PORT) --override log.dirs=$(DATA)

# System packages the tests need (kcat from Debian: librdkafka 2.0.2, the oldest client we support).
system-deps:
	@command -v kcat >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq kcat; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq kcat; fi; }

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check kvstream tests tools
	$(VENV)/bin/ruff format --check kvstream tests tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: system-deps $(TEST_STAMP) lint
	$(VENV)/bin/pytest -q

bench: $(TEST_STAMP)
	$(PY) tools/bench.py

clean:
	rm -rf $(VENV) kvstream-data
