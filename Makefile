# tfrollout — the two commands most people need: `make deploy` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= deploy.toml
SOURCE_MODEL ?= demo/source_model.keras
# epochs for the demo source model (`make deploy SOURCE_EPOCHS=5`); empty: the CLI's default
SOURCE_EPOCHS ?=
PYTEST_ARGS ?=

.PHONY: install deploy status rollback serve-stop test test-fast bench lint protos serving-image clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package (editable) with test extras

$(SOURCE_MODEL): | $(STAMP)
	$(BIN)/tfrollout demo source-model --out $(SOURCE_MODEL)$(if $(strip $(SOURCE_EPOCHS)), --epochs $(SOURCE_EPOCHS))

deploy: $(STAMP) $(SOURCE_MODEL)  ## load -> transfer -> export -> ... with $(CONFIG)
	$(BIN)/tfrollout deploy --config $(CONFIG)

status: $(STAMP)  ## what the serving runtime has loaded, labels, health
	$(BIN)/tfrollout status

rollback: $(STAMP)  ## back to the previous committed version on the serving host
	$(BIN)/tfrollout rollback

serve-stop: $(STAMP)  ## stop the local model server that `make deploy` left running
	$(BIN)/tfrollout serve stop

test: $(STAMP)  ## the whole suite, end-to-end tests included
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## everything but the slow end-to-end tests
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

bench: $(STAMP)  ## benchmarks; machine-readable results in bench/results/*.json
	mkdir -p bench/results
	set -e; for script in bench/bench_*.py; do \
	  name=$$(basename $$script .py); name=$${name#bench_}; \
	  echo "== $$script"; $(BIN)/python $$script --out bench/results/$$name.json; \
	done

lint: $(STAMP)  ## ruff (pipeline, serving, tests, bench) + mypy (pipeline, serving)
	$(BIN)/ruff check pipeline serving tests bench
	$(BIN)/mypy pipeline serving

protos: $(STAMP)  ## regenerate serving/client's protobuf modules from its .proto
	$(BIN)/python -m serving.client.protos.generate

serving-image:  ## build the offline TF Serving-compatible image (needs dockerd)
	bash infra/serving-image/build.sh

clean:
	-test -x $(BIN)/tfrollout && $(BIN)/tfrollout serve stop
	rm -rf .tfrollout exports store
