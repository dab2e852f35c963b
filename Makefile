# Two entry points: `make demo` (analyze the sample photo) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= .restyle-demo

.PHONY: demo test lint clean

# The dev dependency group (pyproject.toml's [dependency-groups]) needs pip 25.1 or later.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]' --group dev
	touch $@

demo: $(BIN)/.installed
	$(BIN)/restyle catalog build examples/catalog/listings.jsonl --catalog $(DEMO_DIR)/catalog
	$(BIN)/restyle analyze examples/photo.jpg --catalog $(DEMO_DIR)/catalog

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
