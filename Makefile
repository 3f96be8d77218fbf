# Moonslot: `make demo` runs the site with demo data; `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STRIPE_SANDBOX_PORT ?= 12111

.PHONY: demo test install system-packages bench-packages lint typecheck migrations-check pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the dependency list changes.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Debian packages the site uses at run time: the CJK font of the manifest PDFs. Installed
# only when missing, and only where apt-get can be run (root); elsewhere a hint is printed.
system-packages:
	@if dpkg -s fonts-ipafont-gothic >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing fonts-ipafont-gothic (manifest PDFs)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-ipafont-gothic >/dev/null; \
	else echo "Note: install the Debian package fonts-ipafont-gothic for manifest PDFs."; fi

# With no Stripe keys, a local Stripe sandbox (localstripe, a separate process) takes the
# card payments; it stops with the server.
demo: install system-packages
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_demo_data
	@echo
	@echo "  Catalogue:   http://$(HOST):$(PORT)/"
	@echo "  Admin:       http://$(HOST):$(PORT)/admin/"
	@echo "  API:         http://$(HOST):$(PORT)/api/v1/missions/"
	@echo "  API docs:    http://$(HOST):$(PORT)/api/v1/docs/"
	@echo "  Test cards:  4242 4242 4242 4242 (paid), 4000 0025 0000 3155 (3-D Secure), 4000 0000 0000 0341 (declined)"
	@echo
	$(BIN)/python manage.py run_stripe_sandbox --port $(STRIPE_SANDBOX_PORT) --site-url http://$(HOST):$(PORT) & \
	  SANDBOX=$$!; trap 'kill $$SANDBOX 2>/dev/null' EXIT INT TERM; \
	  STRIPE_API_BASE=http://127.0.0.1:$(STRIPE_SANDBOX_PORT) $(BIN)/python manage.py runserver $(HOST):$(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy .

migrations-check: install
	DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python manage.py makemigrations --check --dry-run

pytest: install
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck migrations-check pytest

# The benchmark's load generator (wrk, from Debian's packages), installed only when missing
# and only where apt-get can be run; elsewhere the harness falls back to a Python client.
bench-packages:
	@if command -v wrk >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing wrk (benchmark load generator)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; \
	else echo "Note: install the Debian package wrk for the benchmark's reads (a slower Python client stands in)."; fi

# BENCH_ONLY="api-missions page-mission" runs only those scenarios (python -m bench --help).
bench: install system-packages bench-packages
	$(BIN)/python -m bench $(if $(BENCH_ONLY),--only $(BENCH_ONLY)) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
