# The few commands a newcomer needs. Each sets up .venv first; PostgreSQL and Redis come from
# DATABASE_URL / REDIS_URL, or are started embedded (scripts/devstack.py) when those are unset.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEVSTACK := $(PY) scripts/devstack.py --
PYTEST_ARGS ?=

.PHONY: run test bench lint format venv migrations-check clean lock

# constraints.txt pins every package to the versions the suite last passed with, so a new release of a
# dependency (a linter's new rule, a test tool's new bug) cannot turn a clean clone red; `make lock` refreshes it.
CONSTRAINTS := -c constraints.txt

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[setup] installing dependencies into $(VENV) (first run takes a minute)"
	@$(PY) -m pip install --progress-bar on --disable-pip-version-check -q --upgrade pip
	@$(PY) -m pip install --progress-bar on --disable-pip-version-check -q $(CONSTRAINTS) -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	@$(DEVSTACK) $(PY) scripts/serve.py

test: $(STAMP)
	@scripts/ensure_chromium.sh
	@$(DEVSTACK) $(PY) scripts/run_tests.py $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml constraints.txt
	@echo "[setup] installing the benchmark extra (pinax-referrals, py-spy)"
	@$(PY) -m pip install --progress-bar on --disable-pip-version-check -q $(CONSTRAINTS) -e ".[dev,bench]"
	@touch $(BENCH_STAMP)

# bench/bench_redirect.py installs wrk from Debian when it is missing and it runs as root.
bench: $(BENCH_STAMP)
	@$(DEVSTACK) $(PY) bench/run_all.py

lint: $(STAMP)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

format: $(STAMP)
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

# The newest versions pyproject.toml's ranges allow, written to constraints.txt; run make test before committing it.
lock: $(STAMP)
	@$(PY) -m pip install --progress-bar on --disable-pip-version-check -q --upgrade -e ".[dev,bench]"
	@{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt
	@touch $(STAMP) $(BENCH_STAMP)
	@echo "[lock] constraints.txt refreshed; run make test, then commit it"

clean:
	rm -rf .run staticfiles
