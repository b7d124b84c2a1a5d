# lossforge: `make quickstart` runs the main job, `make test` runs the suite. Both create .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install quickstart test data bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,dask,data]"
	touch $(STAMP)

quickstart: install
	$(PY) -m lossforge.quickstart

test: install
	$(PY) -m pytest -q

data: install
	$(PY) -m lossforge.data.fetch

clean:
	rm -rf $(VENV) build *.egg-info
