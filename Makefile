# The two commands a new user needs (see README):
#   make demo   install everything and run the whole pipeline on the bundled demo
#   make test   install everything and run the test suite
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test clean

setup:
	bash scripts/setup.sh

demo: setup
	dvc repro

test:
	bash scripts/setup.sh --test
	python -m pytest -q

clean:
	rm -rf data models reports
