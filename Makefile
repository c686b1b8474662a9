# Two commands on a fresh machine: `make serve` and `make test` (only python3 needed).
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: serve test lint audit install install-dev browser deploy-tools djcqrs-env clean bench bench-outbox bench-cqrs bench-work faults soak fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools

# The stamps name what they installed: dev includes dasf, so installing dev satisfies serve, and a stamp
# from before `serve` installed dasf (.installed) does not.
$(VENV)/.installed-dasf: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dasf]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(VENV)/.installed-dasf $@

install: $(VENV)/.installed-dasf
install-dev: $(VENV)/.installed-dev

serve: install
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

# The whole suite on SQLite, then the protocol suite again on PostgreSQL (tests that start their own
# PostgreSQL + Redis servers, tests of no database behaviour, wire interoperability and browser tests run
# once; the API fuzzing runs fewer examples and no coverage phase). Services that are down
# are started first when possible. Each pass runs on TEST_JOBS pytest-xdist workers (each its own
# session: database, static files, Redis names; tests/environment.py), then the few tests that stop
# and start a shared service run alone. Three workers on two cores: most tests wait on servers and
# timers, and a third worker took each pass 13 % (SQLite) and 10 % (PostgreSQL) less time. pytest's
# status 5 (no test selected) passes the PostgreSQL pass's last step: today every test that restarts a
# service starts servers of its own (pinned_backend), so that step may select none.
TEST_JOBS ?= 3
PG_PASS   := SWITCHYARD_TEST_DB=postgres SWITCHYARD_FUZZ_EXAMPLES=4 SWITCHYARD_FUZZ_COVERAGE=0 $(BIN)/python -m pytest
PG_TESTS  := not pinned_backend and not database_agnostic and not wire_interop and not browser
test: install-dev
	-@bash .ci/services
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile -m "not restarts_services" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m "restarts_services" $(PYTEST_ARGS)
	@if [ "$$CI" = true ] || (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
		$(PG_PASS) -n $(TEST_JOBS) --dist loadfile -m "$(PG_TESTS) and not restarts_services" $(PYTEST_ARGS) && \
		{ $(PG_PASS) -m "$(PG_TESTS) and restarts_services" $(PYTEST_ARGS); status=$$?; \
		  [ $$status -eq 0 ] || [ $$status -eq 5 ]; }; \
	else echo "PostgreSQL is not reachable on 127.0.0.1:5432: skipping the PostgreSQL pass"; fi

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy app consumers relays settings client/switchyard_client faults

# pip-audit of the installed dependency set (.ci/audit.py): fails on a known vulnerability with a fix
# available; a package pip-audit skips is audited from PyPI's per-project data when it is at the latest
# release, else named as not audited; says NOT AUDITED, and passes unless AUDIT_REQUIRED=1, where no
# advisory data is reached. pip-audit lives in a virtualenv of its own: it is no dependency of the project.
AUDIT_VENV := .venv-audit
$(AUDIT_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/pip install -q 'pip-audit>=2.7,<3'
	touch $@

audit: install-dev $(AUDIT_VENV)/.installed
	$(BIN)/python .ci/audit.py --python $(BIN)/python --pip-audit $(AUDIT_VENV)/bin/pip-audit

# The fuzzing's long profile: every websocket endpoint and handshake (tests/test_fuzz_*.py) and the HTTP API
# (tests/test_api_fuzz.py) with FUZZ_EXAMPLES generated inputs per endpoint or operation (make test runs 10),
# on a random seed printed first and on failure: `make fuzz FUZZ_SEED=N` replays a run. The per-test timeout
# grows with the examples (an API operation's 300 examples outlast the suite's 120 s on a loaded machine).
FUZZ_EXAMPLES ?= 300
FUZZ_SEED     ?=
FUZZ_TESTS    := tests/test_fuzz_dasf.py tests/test_fuzz_pulsar.py tests/test_fuzz_status_work.py \
                 tests/test_fuzz_handshakes.py tests/test_api_fuzz.py
fuzz: install-dev
	@seed=$(if $(FUZZ_SEED),$(FUZZ_SEED),$$(( (RANDOM << 15) | RANDOM ))); \
	echo "make fuzz: seed $$seed, $(FUZZ_EXAMPLES) examples (replay: make fuzz FUZZ_SEED=$$seed)"; \
	SWITCHYARD_FUZZ_SEED=$$seed SWITCHYARD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -n $(TEST_JOBS) \
		--dist loadfile --timeout $$(( 120 + 2 * $(FUZZ_EXAMPLES) )) $(FUZZ_TESTS) $(PYTEST_ARGS) || { echo "make fuzz failed with seed $$seed"; exit 1; }

# Switchyard against a raw websockets relay, same run (benchmarks/run.py; --quick, --only W1,W3).
# Under 5 minutes; PostgreSQL + Redis configurations only when they answer on 127.0.0.1.
bench: install-dev
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# The outbox relay on PostgreSQL + RabbitMQ against raw aio-pika (benchmarks/outbox.py; about 2 minutes).
bench-outbox: install-dev
	$(BIN)/python -m benchmarks.outbox $(BENCH_ARGS)

# CQRS replication master -> replica on PostgreSQL + RabbitMQ, Switchyard against django-cqrs 3.1.0 in the
# same run (benchmarks/cqrs.py; --changes N, --batches 1,100, --rounds 3; about four minutes).
bench-cqrs: install-dev djcqrs-env
	$(BIN)/python -m benchmarks.cqrs $(BENCH_ARGS)

# Work requests pushed to 1, 10 and 50 worker sockets, on SQLite and on PostgreSQL (when 127.0.0.1:5432 answers),
# against a raw job queue on the same database in the same run (benchmarks/work.py; --quick; under 5 minutes).
bench-work: install-dev
	$(BIN)/python -m benchmarks.work $(BENCH_ARGS)

# The fault matrix (faults/): server kills, PostgreSQL / Redis / RabbitMQ restarts, crashed and frozen
# consumers and workers, a full disk, against real processes on loopback; one table row each (acked /
# delivered / duplicated / lost, recovery time), exit status 1 on any loss or unexpected ERROR. It stops
# and starts the machine's services: not next to other work on them. About 10 minutes; --quick (CI's
# profile, tests/test_fault_matrix.py), --only NAME, --list.
faults: install-dev
	-@bash .ci/services
	$(BIN)/python -m faults.run $(FAULTS_ARGS)

# Mixed traffic (streams, request/reply, outbox, workers, connection churn) against one server for SOAK_ARGS
# (`--minutes 10`, `--interval-s 60`, `--postgres`): figures per interval, a PNG plot, exit 1 unless memory
# stays flat after warm-up with nothing lost (benchmarks/soak/; not in CI). matplotlib is the soak extra.
$(VENV)/.installed-soak: pyproject.toml | $(VENV)/.installed-dev
	$(BIN)/pip install -q -e '.[dev,soak]'
	touch $@

soak: $(VENV)/.installed-soak
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

# Debian packages: the index is updated at most once an hour (.ci/run installs two packages in a row).
APT_STAMP   := /tmp/switchyard-apt-updated
APT_INSTALL := { test -n "$$(find $(APT_STAMP) -mmin -60 2>/dev/null)" || { apt-get update -qq && touch $(APT_STAMP); }; } \
               && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

# Debian's Chromium for the status page's browser test (playwright drives it; it cannot download one).
browser:
	@command -v chromium >/dev/null || { $(APT_INSTALL) chromium; }

# Debian's nginx, for the test of deploy/nginx/switchyard.conf (nginx -t, and a real proxy in front of a server).
deploy-tools:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { $(APT_INSTALL) nginx; }

# The real django-cqrs, in a virtualenv of its own, for tests/test_cqrs_interop.py (tests/djcqrs_project
# runs in it: Switchyard's replica and master against django-cqrs's own) and benchmarks/cqrs.py (psycopg:
# there the project runs on PostgreSQL).
DJCQRS_VENV := .venv-djcqrs
$(DJCQRS_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(DJCQRS_VENV)
	$(DJCQRS_VENV)/bin/python -m pip install -q --upgrade pip
	$(DJCQRS_VENV)/bin/pip install -q 'django-cqrs==3.1.0' 'django>=5,<6' 'psycopg[binary]>=3.2'
	touch $@

djcqrs-env: $(DJCQRS_VENV)/.installed

clean:
	rm -rf $(VENV) $(DJCQRS_VENV) $(AUDIT_VENV) *.egg-info .mypy_cache .pytest_cache .ruff_cache
