# The project's front door. `make run` serves the app on its embedded defaults;
# `make test` runs the whole suite, browser tests included. Both set up what they
# need first and are quick the second time (stamp files skip finished steps).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: setup run test test-deep browser clean pdf-libraries i18n-extract i18n-update i18n-compile translations

setup: pdf-libraries $(VENV)/.installed node_modules/.installed static/vendor/htmx.min.js translations

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,ops]'
	touch $@

# The npm dependencies, pinned in package-lock.json: htmx (copied into static/) and axe-core
# (only the browser tests use it; the app never serves it). The stamp is newer than the lock file
# after `npm ci`, so a changed lock file (or a clean clone) installs them again.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

static/vendor/htmx.min.js: node_modules/.installed
	mkdir -p static/vendor
	cp node_modules/htmx.org/dist/htmx.min.js $@

# Translations (billing/translations/, see README "Translating"): the .po files are the source;
# the .mo files the app loads are built here, never committed.
BABEL  := $(VENV)/bin/pybabel
CATALOGS := billing/translations

translations: $(VENV)/.installed $(patsubst %.po,%.mo,$(wildcard $(CATALOGS)/*/LC_MESSAGES/messages.po))

$(CATALOGS)/%/LC_MESSAGES/messages.mo: $(CATALOGS)/%/LC_MESSAGES/messages.po
	$(BABEL) -q compile -d $(CATALOGS) -D messages -l $*

i18n-extract: $(VENV)/.installed
	$(BABEL) -q extract -F babel.cfg -k lazy_gettext -k pgettext:1c,2 --add-location=file --sort-by-file \
	  --project="PayTR Billing" --copyright-holder="PayTR Billing" --msgid-bugs-address="" \
	  -o $(CATALOGS)/messages.pot .

i18n-update: i18n-extract
	$(BABEL) -q update -i $(CATALOGS)/messages.pot -d $(CATALOGS) -D messages --no-fuzzy-matching --ignore-obsolete

i18n-compile: $(VENV)/.installed
	$(BABEL) compile --statistics -d $(CATALOGS) -D messages

# Debian's Chromium for the browser tests (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; }

run: setup
	$(PY) main.py --host $(HOST) --port $(PORT)

# The tests are independent (each has its own database, ports and browser context), so they
# run on two workers (pytest-xdist): about 1 min 50 s instead of 3 min on the 2-core CI machine.
TEST_WORKERS ?= 2

# What WeasyPrint (invoice PDFs) needs from Debian: Pango and a font with every Turkish letter.
# Installed by `make setup` when missing, like Chromium for the tests.
pdf-libraries:
	@{ $(PYTHON) -c "import ctypes.util, sys; sys.exit(not ctypes.util.find_library('pangoft2-1.0'))" \
	  && test -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf; } || { \
	  echo "installing Pango and DejaVu fonts for PDF invoices"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core; }

test: setup browser
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The model-based test of a subscription's whole life (tests/test_model.py), long: 2,000
# random lives of 60 steps instead of the 300 of 40 that `make test` runs (about 80 s).
test-deep: setup
	MODEL_EXAMPLES=$${MODEL_EXAMPLES:-2000} MODEL_STEPS=$${MODEL_STEPS:-60} $(PY) -m pytest -q tests/test_model.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) node_modules static/vendor
