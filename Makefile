# nlpjax developer commands. Every target creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Raw corpora: ../shared/data on development and CI machines; otherwise the loaders
# download into ~/.cache/nlpjax/data (override by exporting NLPJAX_DATA_DIR).
export NLPJAX_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(HOME)/.cache/nlpjax/data)

DEMO_DIR ?= /tmp/nlpjax_demo

.PHONY: demo test test-all bench lint format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nlpjax train --config=experiments/shakespeare_char.py:demo --workdir=$(DEMO_DIR)
	$(VENV)/bin/nlpjax generate --workdir=$(DEMO_DIR) --prompt="ROMEO:" --max_new_tokens=300 --temperature=0.8 --top_k=40 --seed=0

# Test files run in parallel on every core (one file stays on one worker).
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q -n auto --dist loadfile --durations=25

test-all: $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) benchmarks/bench_decoder_lm.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) $(DEMO_DIR)
