from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import rpc_client
from helpers import end_daemons
from rpc_client import Daemon, daemon_env

# Daemons forked from one that imported agentd once (tests/zygote.py); "exec" starts a
# real `python -m agentd` each time.
rpc_client.SPAWN = os.environ.get("AGENTD_TEST_SPAWN", "fork")
# Every message agentd sends is checked against protocol/agentd.schema.json.
rpc_client.VALIDATE = True
# The whole suite runs unshared (each editor's own agentd) unless AGENTD_TEST_SHARED=1:
# then every spawned agentd is a forwarder to the test's shared daemon.
rpc_client.SHARED = os.environ.get("AGENTD_TEST_SHARED", "0")
# Also for the agentd a test starts with an environment of its own (`agentd chat`).
os.environ["AGENTD_SHARED"] = rpc_client.SHARED


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Shared, the tests of one editor's own process are left out (deselected)."""
    if rpc_client.SHARED != "1":
        return
    kept = [item for item in items if item.get_closest_marker("unshared") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture(scope="session", autouse=True)
def _shared_daemons_end() -> Iterator[None]:
    """Shared, the daemons of tests that start agentd with an environment of their own
    live in one directory of this run, and end with it."""
    if rpc_client.SHARED != "1":
        yield
        return
    import tempfile

    directory = tempfile.mkdtemp(prefix="agentd-tests-")
    os.environ["AGENTD_RUNTIME_DIR"] = directory
    yield
    end_daemons(directory)


@pytest.fixture(autouse=True)
def _test_daemons_end(tmp_path: Path) -> Iterator[None]:
    """Shared, a test's daemons end with it (else each would live its idle time)."""
    yield
    if rpc_client.SHARED == "1":
        if (tmp_path / "run").exists():
            end_daemons(rpc_client.runtime_dir(tmp_path))
        end_daemons(os.environ["AGENTD_RUNTIME_DIR"])


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator:
    """spawn(base_url=None, **env) -> an agentd started on tmp_path's data and state dirs."""
    daemons: list[Daemon] = []

    def _spawn(
        base_url: str | None = None,
        *,
        args: list[str] | None = None,
        initialize: bool = True,
        workspace: Path | None = None,
        **env: str,
    ) -> Daemon:
        d = Daemon(daemon_env(tmp_path, base_url, **env), args=args)
        daemons.append(d)
        if initialize:
            d.initialize(workspaceRoot=str(workspace or tmp_path))
        return d

    yield _spawn
    for d in daemons:
        d.stop()


@pytest.fixture(scope="session")
def model_server() -> Iterator:
    from agentd.scripted_model import ScriptedModelServer

    with ScriptedModelServer(
        fixtures_dir=Path(__file__).parent / "fixtures" / "openai-compat"
    ) as srv:
        yield srv


@pytest.fixture
def model(model_server):  # type: ignore[no-untyped-def]
    """The scripted model, its queue and recorded requests emptied."""
    model_server.reset()
    return model_server


# The name the provider and scripted-model tests use for it.
srv = model


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """An empty workspace directory."""
    root = tmp_path / "ws"
    root.mkdir()
    return root
