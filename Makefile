# digit-reader: every target installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INPUT ?= samples/
OUTPUT ?= output/
MNIST ?= ../shared/data/mnist
REAL ?= ../shared/data/real
export DIGITS_MNIST ?= $(MNIST)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install process train eval bench test samples clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

process: install
	$(BIN)/digits process $(INPUT) --output $(OUTPUT)

train: install
	$(BIN)/digits train --mnist $(MNIST) --real $(REAL)

eval: install
	$(BIN)/digits eval --mnist $(MNIST) --real $(REAL)

bench: install
	$(BIN)/python bench/bench_classify.py; a=$$?; $(BIN)/python bench/bench_pages.py; b=$$?; exit $$((a || b))

samples: install
	$(BIN)/digits samples --mnist $(MNIST) --output samples/

test: install
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache output/*
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
