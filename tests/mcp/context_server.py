"""A small MCP server written with the SDK's own server API, for agentd's tests.

`whoami` proves the tool context reaches an MCP server: it reads the `_meta` agentd
sends with the call and the tool-context file named by its `sessionScopeKey` in
`$AGENTD_TOOL_CONTEXT_DIR`, and returns both. The other tools misbehave on request:
hang (optionally ignoring cancellation), report progress, crash mid-call, change the tool
list, storm the client with `tools/list_changed`, start processes that try to outlive
the server, return an image, fail.

    python tests/mcp/context_server.py        (stdio)

`STARTS_FILE` in the environment: each start appends its pid there. `EXTRA_TOOLS`:
comma-separated names of more tools, each answering with its own name (any characters:
`x.y`, `x y`).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ImageContent, TextContent

server = MCPServer("agentd-test")

if os.environ.get("STARTS_FILE"):
    with open(os.environ["STARTS_FILE"], "a") as f:
        f.write(f"{os.getpid()}\n")
print("context_server: started", file=sys.stderr, flush=True)


@server.tool()
def whoami(ctx: Context) -> str:
    """Report the run this call serves: the request's _meta and the tool-context file."""
    meta = dict(ctx.request_context.meta or {})
    key = meta.get("sessionScopeKey")
    directory = os.environ.get("AGENTD_TOOL_CONTEXT_DIR")
    context = None
    if key and directory:
        path = Path(directory) / f"{key}.json"
        context = json.loads(path.read_text()) if path.exists() else f"missing: {path}"
    return json.dumps({"meta": meta, "contextDir": directory, "context": context})


@server.tool()
async def hang(seconds: float = 3600, ignore_cancel: bool = False) -> str:
    """Sleep; with ignore_cancel, a cancellation from the client is not honoured."""
    if ignore_cancel:
        done = threading.Event()
        await anyio.to_thread.run_sync(done.wait, seconds, abandon_on_cancel=False)
        return "woke up"
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        # Seen by the tests in agentd's log: the client's notifications/cancelled arrived.
        print("context_server: hang cancelled by the client", file=sys.stderr, flush=True)
        raise
    return "woke up"


@server.tool()
async def progress(ctx: Context, steps: int = 3, delay: float = 0.3) -> str:
    """Report progress `steps` times, `delay` seconds apart."""
    for i in range(1, steps + 1):
        await anyio.sleep(delay)
        await ctx.report_progress(i, steps, f"step {i}")
    return f"{steps} steps done"


@server.tool()
def crash(code: int = 3) -> str:
    """Exit the server process in the middle of the call."""
    print("context_server: crashing on purpose", file=sys.stderr, flush=True)
    os._exit(code)


@server.tool()
async def add_tool(name: str, ctx: Context) -> str:
    """Register a new tool and tell the client the tool list changed."""

    def added() -> str:
        return f"{name} works"

    server.add_tool(added, name=name, description=f"added at run time: {name}")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


@server.tool()
async def storm(ctx: Context, count: int = 100, grow: bool = False) -> str:
    """Send `count` tools/list_changed notifications; with `grow`, add a tool before each."""
    for i in range(count):
        if grow:
            server.add_tool(_named(f"storm_{i}"), name=f"storm_{i}", description="storm")
        await ctx.session.send_tool_list_changed()
    return f"{count} notifications sent"


# A process that tries to outlive the server: `python -c CHILD KIND PIDS_FILE`. Each
# process it becomes appends its pid to PIDS_FILE, then sleeps.
CHILD = """
import os, signal, sys, time
kind, pids = sys.argv[1], sys.argv[2]
def note():
    with open(pids, "a") as f:
        f.write(f"{os.getpid()}\\n")
if kind == "double_fork":
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
if kind != "plain":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if kind == "forker":
    note()
    for _ in range(100):
        if os.fork() == 0:
            os.setsid()
            note()
            time.sleep(3600)
            os._exit(0)
        time.sleep(0.05)
note()
time.sleep(3600)
"""


@server.tool()
def detach(pids_file: str, kinds: list[str]) -> str:
    """Start processes that try to outlive this server, one per kind: `plain` (same
    process group, holding the server's stdout open), `setsid` (a session of its own),
    `ignore_term` (its own process group, ignoring SIGTERM), `double_fork` (orphaned,
    in a new session, ignoring SIGTERM), `forker` (keeps forking new sessions). Returns
    once each has written its pid."""
    for kind in kinds:
        subprocess.Popen(
            [sys.executable, "-c", CHILD, kind, pids_file],
            stdin=subprocess.DEVNULL,
            stdout=None if kind == "plain" else subprocess.DEVNULL,
            start_new_session=kind == "setsid",
            process_group=0 if kind == "ignore_term" else None,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = Path(pids_file).read_text().split() if Path(pids_file).exists() else []
        if len(pids) >= len(kinds) + ("forker" in kinds):
            return " ".join(pids)
        time.sleep(0.02)
    raise ToolError("the children did not start")


def _named(name: str):  # type: ignore[no-untyped-def]
    def answer() -> str:
        return name

    return answer


for _extra in filter(None, os.environ.get("EXTRA_TOOLS", "").split(",")):
    server.add_tool(_named(_extra), name=_extra, description=f"answers {_extra}")


@server.tool()
def image() -> list:
    """Return some text and a tiny PNG."""
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(60)).decode()
    return [
        TextContent(type="text", text="a picture:"),
        ImageContent(type="image", data=png, mime_type="image/png"),
    ]


@server.tool()
def fail(why: str = "it failed") -> str:
    """Raise: the client gets an isError result."""
    raise ToolError(why)


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


if __name__ == "__main__":
    _ = time
    server.run()
