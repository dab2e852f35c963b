# Two entry points: `make demo` (analyze the sample photo) and `make test`.
#
# The demo installs only what the library imports by default (numpy, Pillow,
# torch, open_clip, faiss...: pyproject.toml's [project] dependencies); `make
# test` adds the extras and the dev group (Ray, moto, Django, FastAPI, mypy...).
# pip shows its progress bars on a terminal; each step says what it installs
# and ends by listing what it installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
DEMO_DIR ?= .restyle-demo
# The demo's catalog is kept per model: a change of RESTYLE_MODEL builds a new one.
DEMO_MODEL := $(or $(RESTYLE_MODEL),ViT-B-32/laion2b_s34b_b79k)
DEMO_CATALOG := $(DEMO_DIR)/catalog-$(shell printf '%s' '$(DEMO_MODEL)' | tr -c 'A-Za-z0-9._-' '_')
# Lists the packages a `pip install --report FILE` installed.
LIST_INSTALLED = $(BIN)/python -c "import json, sys; report = json.load(open(sys.argv[1])); \
	names = sorted(i['metadata']['name'] + ' ' + i['metadata']['version'] for i in report['install']); \
	print('installed:', ', '.join(names) or 'nothing new')"

.PHONY: demo demo-install test lint clean distclean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(BIN)/.demo-installed: pyproject.toml | $(BIN)/python
	@echo "== installing restyle for the demo: the library and what it imports (torch is the largest)"
	$(PIP) install --progress-bar on --report $(VENV)/demo-install.json -e .
	@$(LIST_INSTALLED) $(VENV)/demo-install.json
	touch $@

demo-install: $(BIN)/.demo-installed

# The dev dependency group (pyproject.toml's [dependency-groups]) needs pip 25.1 or later.
$(BIN)/.installed: pyproject.toml $(BIN)/.demo-installed
	@echo "== installing the extras and the development tools for the tests"
	$(PIP) install --progress-bar on --report $(VENV)/test-install.json -e '.[all]' --group dev
	@$(LIST_INSTALLED) $(VENV)/test-install.json
	touch $@

demo: $(BIN)/.demo-installed
	RESTYLE_MODEL='$(DEMO_MODEL)' $(BIN)/restyle catalog build examples/catalog/listings.jsonl --catalog '$(DEMO_CATALOG)'
	RESTYLE_MODEL='$(DEMO_MODEL)' $(BIN)/restyle analyze examples/photo.jpg --catalog '$(DEMO_CATALOG)'

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

# What the demo and the tests leave; the virtual environment stays.
clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache build dist

# Everything clean removes, and the virtual environment.
distclean: clean
	rm -rf $(VENV)
