# The project's front door. `make run` serves the app on its embedded defaults;
# `make test` runs the whole suite, browser tests included. Both set up what they
# need first and are quick the second time (stamp files skip finished steps).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: setup run test test-deep browser clean

setup: $(VENV)/.installed static/vendor/htmx.min.js

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# htmx is a pinned npm dependency (package-lock.json), copied into static/.
static/vendor/htmx.min.js: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p static/vendor
	cp node_modules/htmx.org/dist/htmx.min.js $@

# Debian's Chromium for the browser tests (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; }

run: setup
	$(PY) main.py --host $(HOST) --port $(PORT)

test: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The model-based test of a subscription's whole life (tests/test_model.py), long: 2,000
# random lives of 60 steps instead of the 300 of 40 that `make test` runs (about 80 s).
test-deep: setup
	MODEL_EXAMPLES=$${MODEL_EXAMPLES:-2000} MODEL_STEPS=$${MODEL_STEPS:-60} $(PY) -m pytest -q tests/test_model.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) node_modules static/vendor
