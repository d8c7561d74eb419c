# Set-up and everyday commands. Every target installs what it needs first, so each works on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: install test run bench rules-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(STAMP)

## Run the unit tests (what .ci/run calls).
test: install
	$(BIN)/python -m pytest

## The main job for now: check the rules, filter an example trace, evaluate the fixture set.
run: install
	$(BIN)/safepath rules check
	$(BIN)/safepath filter --file examples/trace_exfiltration.txt
	$(BIN)/safepath eval tests/fixtures/eval/traces.jsonl

## Micro-benchmarks (pytest-benchmark); figures go to docs/BENCHMARKS.md by hand.
bench: install
	$(BIN)/python -m pytest benchmarks --benchmark-enable --benchmark-only -q

rules-check: install
	$(BIN)/safepath rules check

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
