# The two commands of the README: `make demo` and `make test`. Both build what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tripflow-installed

AIRFLOW_VENV  ?= .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.tripflow-installed
AIRFLOW_VERSION := 3.3.0

SUPERSET_VENV  ?= .venv-superset
SUPERSET_STAMP := $(SUPERSET_VENV)/.tripflow-installed

.PHONY: demo test lint install clean airflow-venv superset-venv chromium prometheus jars bench-e2e

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Airflow lives in its own virtualenv (its dependency tree is not tripflow's), with tripflow
# installed beside it so DAG tasks can call it.
$(AIRFLOW_STAMP): pyproject.toml
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -e .
	touch $(AIRFLOW_STAMP)

airflow-venv: $(AIRFLOW_STAMP)

# Superset too (for the dashboard tests; `tripflow dashboards serve` makes its own under
# $TRIPFLOW_HOME unless TRIPFLOW_SUPERSET_VENV names this one). The pinned recipe lives in
# src/tripflow/dashboards/superset.py; `install` is a no-op when the venv already has it.
$(SUPERSET_STAMP): $(STAMP) src/tripflow/dashboards/superset.py
	TRIPFLOW_SUPERSET_VENV=$(abspath $(SUPERSET_VENV)) $(BIN)/tripflow dashboards install
	touch $(SUPERSET_STAMP)

superset-venv: $(SUPERSET_STAMP)

# Java jar sets (Apache Kafka brokers; Spark's Delta Lake and JDBC jars), pinned in
# src/tripflow/services/jarsets/*.pom.xml, fetched once into a cache this Makefile owns.
JARS_DIR ?= .jars
export TRIPFLOW_JARS_DIR := $(abspath $(JARS_DIR))

jars: $(STAMP)
	$(BIN)/tripflow jars

# actionlint (rhysd's, pinned) for the CI workflow's test, built once from the Go module proxy.
ACTIONLINT_VERSION := 1.7.12
ACTIONLINT := .tools/actionlint-$(ACTIONLINT_VERSION)
$(ACTIONLINT):
	@command -v go >/dev/null || { echo "install Go first (apt-get install golang-go)" >&2; exit 1; }
	GOBIN=$(abspath .tools) go install github.com/rhysd/actionlint/cmd/actionlint@v$(ACTIONLINT_VERSION)
	mv .tools/actionlint $(ACTIONLINT)

# composecheck (tools/composecheck): deploy/docker-compose.yml loaded by compose-go, as
# `docker compose config` loads it; no compose plugin runs here.
COMPOSECHECK := .tools/composecheck
$(COMPOSECHECK): tools/composecheck/main.go tools/composecheck/go.mod tools/composecheck/go.sum
	@command -v go >/dev/null || { echo "install Go first (apt-get install golang-go)" >&2; exit 1; }
	go build -C tools/composecheck -o $(abspath $(COMPOSECHECK)) .

# The browser test drives Debian's chromium (Playwright's own browser download is not used).
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  { echo "install Debian's chromium first (apt-get install chromium)" >&2; exit 1; }

# The alert-rule tests run Debian's prometheus and promtool.
prometheus:
	@command -v prometheus >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; } || \
	  { echo "install Debian's prometheus first (apt-get install prometheus)" >&2; exit 1; }

demo: $(STAMP)
	$(BIN)/tripflow demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint chromium prometheus jars $(ACTIONLINT) $(COMPOSECHECK) $(AIRFLOW_STAMP) $(SUPERSET_STAMP)
	TRIPFLOW_AIRFLOW_VENV=$(abspath $(AIRFLOW_VENV)) TRIPFLOW_ACTIONLINT=$(abspath $(ACTIONLINT)) \
	TRIPFLOW_COMPOSECHECK=$(abspath $(COMPOSECHECK)) \
	TRIPFLOW_SUPERSET_VENV=$(abspath $(SUPERSET_VENV)) $(BIN)/pytest

# Files → cold marts at full TripClick scale, timed as a user runs it (prints JSON).
bench-e2e: $(STAMP)
	PYTHONPATH=src $(BIN)/python bench/bench_e2e.py

clean:
	-$(BIN)/tripflow services down
	-$(BIN)/tripflow dashboards stop
	rm -rf $(VENV) $(AIRFLOW_VENV) $(SUPERSET_VENV) .tripflow $(JARS_DIR) .tools
