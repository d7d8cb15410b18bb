# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.constcl-installed

.PHONY: demo test lint bench docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/constcl demo

test: $(STAMP)
	$(PY) -m ruff check src tests bench
	$(PY) -m pytest -q -n 2 --durations=15

lint: $(STAMP)
	$(PY) -m ruff check src tests bench

bench: $(STAMP)
	$(VENV)/bin/constcl bench

# the documentation site (mkdocs.yml) into site/; warnings (broken links, stale API names) are errors
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
