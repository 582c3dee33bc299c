# Kong: `make demo` runs the demo fleet; `make test` runs the whole suite.
# Both start from a machine that only has python3 (and apt-get, as root, for
# the Chromium and PostgreSQL the tests use).

PYTHON ?= python3
PYTHON_NEW ?= $(shell ./.ci/find-python)
VENV ?= .venv
VENV6 ?= .venv-django6

.PHONY: demo test test-django52 test-django6 lint bench screenshots clean

$(VENV)/.installed: setup.py requirements/test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e . "Django>=5.2,<6" -r requirements/test.txt
	touch $@

$(VENV6)/.installed: setup.py requirements/test.txt
	$(PYTHON_NEW) -m venv $(VENV6)
	$(VENV6)/bin/pip install -q --upgrade pip
	$(VENV6)/bin/pip install -q -e . "Django>=6.0,<7" -r requirements/test.txt
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/python example_project/run_demo.py

test: $(VENV)/.installed $(VENV6)/.installed
	./.ci/test-all

test-django52: $(VENV)/.installed
	VENV=$(VENV) ./.ci/test-all --only

test-django6: $(VENV6)/.installed
	VENV=$(VENV6) ./.ci/test-all --only

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check kong tests bench example_project
	$(VENV)/bin/mypy kong

screenshots: $(VENV)/.installed
	./.ci/services start
	KONG_SCREENSHOT_DIR=docs $(VENV)/bin/python -m pytest -m browser -q tests/test_browser.py

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf $(VENV) $(VENV6) build *.egg-info example_project/*.sqlite3
