"""Record real agentd notifications for the chat-state tests (chat_state_spec.lua).

Runs the daemon (`python -m agentd`, from the repository root) against its scripted model
server, plays turns in one session the way the plugin would (streamed text with usage,
editor tools that succeed and fail, reasoning, an abort, a provider error, commands in
the sandbox: allowed, refused, blocked and rerun) and writes
tests/fixtures/agentd-notifications.json: per turn, every notification of the session
from the run's `busy` to its `idle`, and the `session/chat` answer.

    python editors/nvim/tests/record_fixture.py     (from the repository root)
"""

from __future__ import annotations

import json
import queue
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))

from rpc_client import Daemon, daemon_env  # noqa: E402

from agentd.scripted_model import ScriptedModelServer  # noqa: E402

OUT = Path(__file__).resolve().parent / "fixtures" / "agentd-notifications.json"

TEXT = "# Plan\n\nFirst **read** the file,\nthen `edit` it:\n\n- one\n- two\n"

# What the plugin offers (tools.lua has the full descriptions and schemas).
CLIENT_TOOLS = [
    {
        "name": "editor_selection",
        "description": "The user's selection.",
        "parameters": {"type": "object"},
    },
    {
        "name": "read_buffer",
        "description": "The text of an open buffer.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
]


def editor_tool(params: dict[str, Any]) -> dict[str, Any]:
    if params["name"] == "editor_selection":
        return {
            "output": "Selection from app.py, lines 2-3 (linewise):\n```python\nx = 1\ny = 2\n```",
            "title": "app.py:2-3",
            "metadata": {"path": "app.py", "startLine": 2, "endLine": 3},
            "isError": False,
        }
    return {"output": "no buffer named nope.py", "isError": True}


def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="agentd-nvim-fixture-") as tmp,
        ScriptedModelServer() as model,
    ):
        base = Path(tmp)
        workspace = base / "workspace"
        workspace.mkdir()
        # Outside the workspace and not under /tmp (private to each sandboxed command).
        outside = Path(tempfile.mkdtemp(prefix="agentd-nvim-fixture-", dir="/var/tmp"))
        config = base / "config.toml"
        # Prices, so that the turns carry a cost as a real model's would.
        config.write_text(
            '[models.scripted]\nprovider = "default"\ninput_price = 3\noutput_price = 15\n'
        )
        d = Daemon(daemon_env(base, model.base_url, AGENTD_CONFIG=str(config)))
        answers: queue.Queue[str] = queue.Queue()
        d.handlers["tool/execute"] = editor_tool
        d.handlers["permission/request"] = lambda _params: {"outcome": answers.get(timeout=20)}
        try:
            init = d.initialize(
                workspaceRoot=str(workspace),
                capabilities={"clientTools": True, "permissionRequests": True},
            )
            # A given title: no title-model call, which would take an enqueued answer.
            session = d.call(
                "session/create", {"workspaceRoot": str(workspace), "title": "Recorded session"}
            )["session"]
            sid = session["id"]
            turns = []

            def play(
                name: str,
                text: str,
                *,
                tools: list[str] | None = None,
                allow: tuple[str, ...] = (),
                abort_after: int | None = None,
            ) -> None:
                for a in allow:
                    answers.put(a)
                start = len(d.messages)
                params: dict[str, Any] = {
                    "sessionId": sid,
                    "parts": [{"type": "text", "text": text}],
                    "clientTools": CLIENT_TOOLS,
                }
                if tools is not None:
                    params["tools"] = tools
                msg_id = d.request_async("session/chat", params)
                if abort_after:
                    d.wait_for(
                        lambda: (
                            sum(m.get("method") == "part/delta" for m in d.messages[start:])
                            >= abort_after
                        )
                    )
                    d.call("session/abort", {"sessionId": sid})
                result = d.result(msg_id, timeout=60)
                run_id = result["runId"]

                def events() -> list[dict[str, Any]] | None:
                    out, started = [], False
                    for m in d.messages[start:]:
                        if "method" not in m or "id" in m:
                            continue  # responses and agentd's requests
                        p = m.get("params") or {}
                        if p.get("sessionId", (p.get("session") or {}).get("id")) != sid:
                            continue
                        if (
                            m["method"] == "session/status"
                            and p.get("runId") == run_id
                            and p["status"] == "busy"
                        ):
                            started = True
                        if started:
                            out.append({"method": m["method"], "params": p})
                            if m["method"] == "session/status" and p["status"] == "idle":
                                return out
                    return None

                evs = d.wait_for(events, timeout=30)
                turns.append(
                    {
                        "name": name,
                        "userText": text,
                        "runId": run_id,
                        "events": evs,
                        "result": result,
                    }
                )
                assert answers.empty(), f"{name}: permission answers left over"
                reason = result["message"].get("finishReason")
                sys.stderr.write(f"{name}: {len(evs)} notifications, finishReason {reason}\n")

            model.enqueue(
                {
                    "text": TEXT,
                    "chunkSize": 7,
                    "usage": {
                        "prompt_tokens": 1200,
                        "completion_tokens": 160,
                        "cached_tokens": 400,
                        "reasoning_tokens": 20,
                    },
                }
            )
            play("stream", "Make a plan")
            play("editor-tool", "/tool editor_selection {}")
            play("editor-tool-error", '/tool read_buffer {"path": "nope.py"}')
            play("reasoning", "/reason why is the sky blue")
            play("abort", "/stream 60 40", abort_after=8)
            play("error", "/error 401")
            play("bash", '/tool bash {"command": "echo hi"}', tools=["bash"], allow=("allow_once",))
            play(
                "bash-refused",
                '/tool bash {"command": "echo never"}',
                tools=["bash"],
                allow=("reject_once",),
            )
            blocked = json.dumps({"command": f"echo x > {outside}/f"})
            play(
                "bash-blocked",
                f"/tool bash {blocked}",
                tools=["bash"],
                allow=("allow_once", "reject_once"),
            )
            play(
                "bash-rerun",
                f"/tool bash {blocked}",
                tools=["bash"],
                allow=("allow_once", "allow_once"),
            )
            final = d.call("session/get", {"sessionId": sid})["session"]
        finally:
            d.stop()
            shutil.rmtree(outside, ignore_errors=True)
        fixture = {
            "source": "recorded from the real agentd by editors/nvim/tests/record_fixture.py "
            "against agentd.scripted_model",
            "agentdVersion": init["serverInfo"]["version"],
            "session": session,
            "finalSession": final,
            "turns": turns,
        }
        # Stable across recordings: the temporary directories vary.
        text = json.dumps(fixture, indent=1, ensure_ascii=False)
        text = text.replace(str(workspace), "/workspace").replace(str(outside), "/outside")
        text = text.replace(str(base), "/tmp/agentd")
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(text + "\n")
        sys.stderr.write(f"wrote {OUT.relative_to(ROOT)} ({len(turns)} turns)\n")


if __name__ == "__main__":
    main()
