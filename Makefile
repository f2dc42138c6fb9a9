# The two commands of the README. Everything they need, they install.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU torch on dev and CI machines; the Dockerfile installs the CUDA build.
PIP_INSTALL := $(BIN)/pip install -q -c constraints.txt

.PHONY: run test lint install clean bench

$(BIN)/ponyserve: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e ".[test]"
	touch $@

install: $(BIN)/ponyserve

run: install
	$(BIN)/ponyserve migrate
	$(BIN)/ponyserve serve

lint: install
	$(BIN)/ruff check app tests bench
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) var
