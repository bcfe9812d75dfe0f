# agentd: `make help` lists the targets.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: help install dev chat test test-python test-shared test-shared-core test-quick test-editors lint schema schema-check bench soak clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: ## install agentd (the `agentd` command)
	$(PIP) install -q .

dev: ## install agentd editable, with the test and lint tools, the MCP servers and the ACP client the tests run
	$(PIP) install -q -e '.[dev]'
	@command -v npm >/dev/null || { echo "make dev: npm is needed (Node 20) for the MCP test server and the ACP TypeScript client"; exit 1; }
	cd tests/mcp && npm ci --no-audit --no-fund --loglevel=error
	cd tests/acp && npm ci --no-audit --no-fund --loglevel=error

chat: install ## chat in the terminal; offline with the bundled scripted model when no model is configured
	agentd chat

test: dev lint schema-check test-python test-shared-core test-editors ## everything CI runs: lint, schema freshness, all tests

test-python: ## the Python test suite (daemon end to end, tools, provider, reliability in its bounded form)
	$(PYTHON) -m pytest -n 2 -q $(PYTEST_ARGS)

test-shared: ## the Python suite with every agentd a forwarder to a shared daemon (tests of one editor's own process left out)
	AGENTD_TEST_SHARED=1 $(PYTHON) -m pytest -n 2 -q $(PYTEST_ARGS)

# The end-to-end protocol tests run twice in CI: unshared (test-python) and shared.
SHARED_CORE = tests/test_sessions.py tests/test_chat.py tests/test_stdio.py tests/test_flow_control.py tests/test_hostile_input.py tests/test_config.py tests/test_redaction.py

test-shared-core: ## the end-to-end protocol tests again, every agentd attached to a shared daemon
	AGENTD_TEST_SHARED=1 $(PYTHON) -m pytest -n 2 -q $(SHARED_CORE) $(PYTEST_ARGS)

test-quick: ## the Python tests without the reliability suite
	$(PYTHON) -m pytest -n 2 -q -m "not reliability" $(PYTEST_ARGS)

soak: dev ## the long reliability runs (10,000 turns, 500 kills, 1,000 aborts, hostile MCP servers, 200,000 framing cases)
	$(PYTHON) bench/soak.py turns
	$(PYTHON) bench/soak.py crash
	$(PYTHON) bench/soak.py storm
	$(PYTHON) bench/soak.py mcp
	$(PYTHON) bench/soak.py framing

test-editors: ## the Neovim and VS Code plugin tests (install what they need)
	@if [ -x editors/nvim/tests/run.sh ]; then bash editors/nvim/tests/run.sh; fi
	@if [ -x editors/vscode/scripts/ci.sh ]; then bash editors/vscode/scripts/ci.sh; fi

lint: ## ruff lint and format check, mypy
	$(PYTHON) -m ruff check agentd tests bench
	$(PYTHON) -m ruff format --check agentd
	$(PYTHON) -m mypy agentd

schema: ## regenerate protocol/agentd.schema.json from agentd/protocol
	$(PYTHON) -m agentd.protocol.schema --write protocol/agentd.schema.json

schema-check: ## fail when protocol/agentd.schema.json is stale
	$(PYTHON) -m agentd.protocol.schema --check protocol/agentd.schema.json

bench: dev ## run the benchmarks (figures in bench/results/)
	$(PYTHON) bench/run.py

clean: ## remove build and cache files
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache bench/results
