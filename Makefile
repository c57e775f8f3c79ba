# The two commands a new user needs (see README):
#   make demo   install everything and run the whole pipeline on the bundled demo
#   make test   install everything, run the test suite, then the machine-sensitive tests
#               under the most portable instruction set, less those that train or export a whole
#               voice (scripts/portability.py; make portability: all of them, every variation)
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test portability clean

setup:
	bash scripts/setup.sh

demo: setup
	dvc repro

test:
	bash scripts/setup.sh --test
	python -m pytest -q
	python -m scripts.portability --variations generic -m "machine and not voice_chain"

portability: setup
	python -m scripts.portability --variations native generic avx2

clean:
	rm -rf data models reports
