# The two commands of the README: `make demo` and `make test`. Both build what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tripflow-installed

AIRFLOW_VENV  ?= .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.tripflow-installed
AIRFLOW_VERSION := 3.3.0

.PHONY: demo test lint install clean airflow-venv

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

demo: $(STAMP)
	$(BIN)/tripflow demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint $(AIRFLOW_STAMP)
	TRIPFLOW_AIRFLOW_VENV=$(abspath $(AIRFLOW_VENV)) $(BIN)/pytest

clean:
	-$(BIN)/tripflow services down
	rm -rf $(VENV) $(AIRFLOW_VENV) .tripflow
