"""`agentd acp` driven by the official ACP TypeScript SDK: tests/acp/client.test.mjs
(node's test runner) spawns the daemon in ACP mode against this suite's scripted model
and checks every message agentd sends against the SDK's v1 JSON schema and its zod
schemas. A second client that shares nothing with agentd or with the Python SDK tests
(tests/test_acp.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "acp" / "client.test.mjs"


def test_the_typescript_sdk_client_flows(model: Any, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "node (20+) is needed: it runs the ACP TypeScript SDK client"
    assert (ROOT / "tests/acp/node_modules/@agentclientprotocol/sdk").is_dir(), (
        "tests/acp/node_modules is missing: run `make dev` (npm ci in tests/acp)"
    )
    env = {
        **os.environ,
        "AGENTD_MODEL_URL": model.base_url,
        "AGENTD_PYTHON": sys.executable,
        "TMPDIR": str(tmp_path),
        "NODE_NO_WARNINGS": "1",
    }
    done = subprocess.run(
        [node, str(SCRIPT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"node {SCRIPT.name} exited {done.returncode}:\n{output[-20000:]}")
    # node's runner ends with its counts: every flow ran, none failed.
    assert "# fail 0" in output and "# pass 7" in output, output[-5000:]
