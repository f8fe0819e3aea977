# No Wrong Door — everything a fresh machine needs is Python 3.11+ and make.
#   make demo   start the embedded stack and run the demo requests (stack stays up)
#   make dev    run the whole stack in the foreground until Ctrl-C
#   make test   lint, type-check and run the test suite (what CI runs)
#   make test-fast  lint and the fast tier: unit, replay and workflow tests (docs/testing.md)
#   make soak   the soak: 1,000 requests under faults on a stack of its own (docs/reliability.md)
#   make stop   stop the stack;  make clean  stop it and delete .state/

.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The first interpreter of 3.11 or newer; override with `make PYTHON=/path/to/python3.12 ...`.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && { echo $$p; break; }; done)
APP_PACKAGES := definitions workflows activities runtime readmodel intake agency_kit nwd i18n
APP_MODULES := $(wildcard worker.py)
PYTEST_ARGS ?=

.PHONY: help install assets messages browser-deps demo dev up stop ps lint typecheck test test-fast bench soak clean

help:
	@echo "make demo | dev | up | stop | ps | test | test-fast | lint | typecheck | bench | soak | clean"

$(BIN)/python:
	@if [ -z "$(PYTHON)" ]; then \
		echo "error: Python 3.11 or newer is needed (found: $$(python3 --version 2>&1 || echo none))." >&2; \
		echo "       Install it, or run: make PYTHON=/path/to/python3.11 ..." >&2; \
		exit 1; \
	fi
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "error: $(PYTHON) is $$($(PYTHON) --version 2>&1); Python 3.11 or newer is needed." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Re-install only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m intake.pages.assets
	@touch $@

install: $(STAMP)

# The U.S. Web Design System's built assets the pages serve (pinned, integrity-checked,
# from the npm registry; no Node.js needed): intake/pages/static/uswds/.
assets: $(STAMP)
	$(BIN)/python -m intake.pages.assets

# Extract the interface's text (templates, Python) into i18n/messages.pot and merge it into
# every language's catalog; translators then fill the empty msgstr (docs/languages.md).
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _ -k gettext -k ngettext:1,2 -k pgettext:1c,2 \
		--no-location --sort-output --omit-header -o i18n/messages.pot .
	$(BIN)/pybabel update -i i18n/messages.pot -d i18n/locales --no-fuzzy-matching \
		--omit-header --ignore-obsolete

demo: $(STAMP)
	$(BIN)/nwd demo

dev: $(STAMP)
	$(BIN)/nwd dev

up: $(STAMP)
	$(BIN)/nwd up

ps: $(STAMP)
	@$(BIN)/nwd ps

stop:
	@if [ -x $(BIN)/nwd ]; then $(BIN)/nwd down; else echo "nothing to stop (no $(VENV))"; fi

# ruff, then the import-layer contracts of pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy $(APP_PACKAGES) $(APP_MODULES)

# pytest exit code 5 means "no tests collected": a test run that tests nothing is a failure.
run_pytest = set +e; $(BIN)/pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests; the suite must run tests" >&2; exit 1; fi; \
	exit $$rc

# Two pytest processes (pytest-xdist), whole files to each (module fixtures stay shared): most
# tests wait on servers, so two cores serve two at once (10.6 min -> 6.5 min measured).
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test_workers = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: lint typecheck browser-deps
	@export CHROMIUM=$(CHROMIUM); $(call run_pytest,$(test_workers))

# The browser tests (tests/browser) drive Debian's chromium through Playwright's
# executable_path (never `playwright install`); the Noto fonts draw Arabic and Chinese in
# their screenshots. As root this installs them with apt-get; otherwise it says what to do.
CHROMIUM ?= /usr/bin/chromium
BROWSER_PACKAGES := chromium fonts-noto-core fonts-noto-cjk
browser-deps:
	@if [ -x "$(CHROMIUM)" ] && { [ "$$(id -u)" != 0 ] || fc-list 2>/dev/null | grep -qi "Noto Sans Arabic"; }; then \
		exit 0; \
	fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(BROWSER_PACKAGES) for the browser tests (apt-get)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null; } || \
		{ echo "error: apt-get could not install $(BROWSER_PACKAGES)" >&2; exit 1; }; \
	else \
		echo "error: the browser tests need Debian's chromium at $(CHROMIUM)." >&2; \
		echo "       Install it as root: apt-get install $(BROWSER_PACKAGES)" >&2; \
		echo "       (or give another build: make test CHROMIUM=/path/to/chromium)" >&2; \
		exit 1; \
	fi

# The tiers are folders, marked by their conftests: this leaves out tests/integration/ and
# tests/e2e/ (no PostgreSQL, no reference agencies; the workflow tests use the dev server).
test-fast: lint
	@$(call run_pytest,-m "not integration and not e2e")

bench: $(STAMP)
	$(BIN)/nwd bench --quick

# The soak (issue 12), its own stack on free ports; SOAK_ARGS adds options, e.g.
# `make soak SOAK_ARGS=--experiment` (the 50-in-flight experiment). Prints where the report is.
SOAK_ARGS ?=
soak: $(STAMP)
	$(BIN)/nwd soak --json bench-results/soak.json $(SOAK_ARGS)

clean: stop
	rm -rf .state
