"""A small MCP server written with the SDK's own server API, for agentd's tests.

`whoami` proves the tool context reaches an MCP server: it reads the `_meta` agentd
sends with the call and the tool-context file named by its `sessionScopeKey` in
`$AGENTD_TOOL_CONTEXT_DIR`, and returns both. The other tools misbehave on request:
hang (optionally ignoring cancellation), report progress, crash mid-call, change the tool
list, storm the client with `tools/list_changed`, return an image, fail. `umask`
reports the server's umask.

    python tests/mcp/context_server.py        (stdio)

`STARTS_FILE` in the environment: each start appends its pid there.
"""

from __future__ import annotations

import base64
import json
import os
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


def _named(name: str):  # type: ignore[no-untyped-def]
    def answer() -> str:
        return name

    return answer


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
def umask() -> str:
    """The server process's umask, in octal (from /proc: reading it does not change it)."""
    with open("/proc/self/status") as status:
        return next(line.split()[1] for line in status if line.startswith("Umask:"))


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


if __name__ == "__main__":
    _ = time
    server.run()
