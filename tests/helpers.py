"""What the tests share: driving chats, replaying what an editor sees, MCP server
configurations, and running a coroutine from a synchronous test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- chats ---------------------------------------------------------------------------


def text_of(message: dict) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


def replay(notes: list[dict], message_id: str) -> list[dict]:
    """Apply part/updated and part/delta in order, as an editor would."""
    parts: dict[str, dict] = {}
    order: list[str] = []
    for n in notes:
        p = n["params"]
        if n["method"] == "part/updated" and p["messageId"] == message_id:
            if p["part"]["id"] not in parts:
                order.append(p["part"]["id"])
            parts[p["part"]["id"]] = json.loads(json.dumps(p["part"]))
        elif n["method"] == "part/delta" and p["messageId"] == message_id:
            part = parts[p["partId"]]
            part[p["field"]] = part.get(p["field"], "") + p["delta"]
    return [parts[i] for i in order]


def run_notes(d, run_id: str) -> list[dict]:
    return [n for n in d.notifications() if n["params"].get("runId") == run_id]


def chat(d, sid, text, **extra):  # type: ignore[no-untyped-def]
    return d.call(
        "session/chat",
        {"sessionId": sid, "parts": [{"type": "text", "text": text}], **extra},
        timeout=30,
    )


def new_session(d, **params):  # type: ignore[no-untyped-def]
    return d.call("session/create", params)["session"]["id"]


# --- MCP servers ---------------------------------------------------------------------

HERE = Path(__file__).parent
CONTEXT_SERVER = HERE / "mcp" / "context_server.py"
EVERYTHING = (
    HERE
    / "mcp"
    / "node_modules"
    / "@modelcontextprotocol"
    / "server-everything"
    / "dist"
    / "index.js"
)


def toml_value(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # strings, numbers, booleans and lists read the same in TOML


def write_config(tmp_path: Path, servers: dict[str, dict]) -> dict[str, str]:
    """A config file with `[mcp_servers.<name>]` tables; returns the env to use it."""
    lines = []
    for name, table in servers.items():
        lines.append(f"[mcp_servers.{name}]")
        for key, value in table.items():
            lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines))
    return {"AGENTD_CONFIG": str(path)}


# The tools tests/mcp/context_server.py lists.
CTX_TOOLS = 10


def ctx_server(**extra: object) -> dict:
    return {"command": sys.executable, "args": [str(CONTEXT_SERVER)], "trust": "allow", **extra}


def tool_parts(message: dict) -> list[dict]:
    return [p for p in message["parts"] if p["type"] == "tool"]


def statuses(d, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        n["params"]["server"]["state"]
        for n in d.notifications("mcp/status")
        if n["params"]["server"]["name"] == name
    ]


def offered(model, index: int = -1) -> list[str]:  # type: ignore[no-untyped-def]
    """The tools offered in the index-th model request of the runs (titles left out)."""
    bodies = [
        r["body"]
        for r in model.requests()
        if "short title" not in json.dumps(r["body"]["messages"][0])
    ]
    return [tool["function"]["name"] for tool in bodies[index].get("tools") or []]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running. A process exiting
    # while its stat is read answers ESRCH (ProcessLookupError).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


# --- shared daemons -------------------------------------------------------------------


def daemon_pids(run_dir: str) -> list[int]:
    """The shared daemons listening in `run_dir` (their command line names the socket;
    a daemon's child between fork and exec has the same, and is left out)."""
    pids: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().split(") ")[1].split()
        except OSError:
            continue
        if state[0] == "Z":
            continue
        if b"daemon" in argv and any(a.startswith(run_dir.encode() + b"/") for a in argv):
            pids[int(entry)] = int(state[1])
    return sorted(pid for pid, parent in pids.items() if parent not in pids)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll a condition outside any daemon's stream (a process's end, a file)."""
    done = threading.Event()
    deadline = timeout
    step = 0.02
    waited = 0.0
    while waited < deadline:
        value = predicate()
        if value:
            return value
        done.wait(step)
        waited += step
    raise TimeoutError("condition not met")


def end_daemons(run_dir: str) -> None:
    """SIGTERM the shared daemons of `run_dir` and wait for their end."""
    for pid in daemon_pids(run_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not daemon_pids(run_dir), timeout=60)
