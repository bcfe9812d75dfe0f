"""An MCP server over stdio that misbehaves on the wire, for agentd's tests.

Written without the SDK on purpose: the SDK's server API cannot put a response's id
last, write a line with no end, or never answer `tools/list`; and it starts in a tenth
of the time. It speaks just enough JSON-RPC (initialize, tools/list, tools/call, ping),
one line at a time.

Environment:
- HOSTILE_TOOLS: comma-separated tool names to list (default:
  big,echo,notify_big,add,crash,detach); a tool not named below answers with its own
  name (any characters: `x.y`, `x y`);
- HOSTILE_MUTE: a method never answered (`initialize` or `tools/list`);
- HOSTILE_EXIT=1: print "no licence key found" to stderr and exit 3 at once (the
  message is not in the environment: agentd masks a server's env values in what it
  shows, as possible secrets);
- HOSTILE_STUBBORN=1: ignore SIGTERM and keep running after stdin closes.

Tools:
- big {bytes, id: "first" | "last" | "middle", end: true}: a text result of `bytes`
  bytes, its id where asked; with `end: false` the line never ends (the server then
  stalls);
- notify_big {bytes}: a notification of `bytes` bytes, then a small answer;
- echo {text};
- add {name}: list one more tool, and say so (`notifications/tools/list_changed`);
- crash {group: false}: exit mid-call; with `group`, SIGKILL its own process group;
- detach {pids_file, kinds}: start processes that try to outlive the server, one per
  kind: `plain` (same process group, holding the server's stdout open), `setsid` (a
  session of its own), `ignore_term` (its own process group, ignoring SIGTERM),
  `double_fork` (orphaned, in a new session, ignoring SIGTERM), `forker` (keeps forking
  new sessions). Each process appends its pid to `pids_file`; the answer comes once
  each kind has.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHUNK = 1 << 20
out = sys.stdout.buffer


def send(obj: dict) -> None:
    out.write(json.dumps(obj).encode() + b"\n")
    out.flush()


def write_filled(prefix: bytes, size: int, suffix: bytes, end: bool) -> None:
    """prefix, `size` bytes of "x", suffix; written in chunks, never held whole."""
    out.write(prefix)
    left = size
    block = b"x" * CHUNK
    while left > 0:
        out.write(block[: min(left, CHUNK)])
        left -= CHUNK
    if not end:
        out.flush()
        while True:
            time.sleep(3600)
    out.write(suffix + b"\n")
    out.flush()


def big(request_id: object, args: dict) -> None:
    size = int(args.get("bytes", 1000))
    rid = json.dumps(request_id).encode()
    where = args.get("id", "first")
    content = b'{"content":[{"type":"text","text":"'
    after = b'"}],"isError":false}'
    if where == "first":
        prefix, suffix = b'{"jsonrpc":"2.0","id":' + rid + b',"result":' + content, after + b"}"
    elif where == "last":
        prefix, suffix = b'{"result":' + content, after + b',"jsonrpc":"2.0","id":' + rid + b"}"
    else:
        prefix = b'{"result":' + content
        suffix = after + b',"id":' + rid + b',"jsonrpc":"2.0","z":0}'
    write_filled(prefix, size, suffix, bool(args.get("end", True)))


def notify_big(request_id: object, args: dict) -> None:
    prefix = b'{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"'
    write_filled(prefix, int(args.get("bytes", 1000)), b'"}}', True)
    result = {"content": [{"type": "text", "text": "small answer after a big notification"}]}
    send({"jsonrpc": "2.0", "id": request_id, "result": result})


# A process that tries to outlive the server: `python -c CHILD KIND PIDS_FILE`.
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


def detach(args: dict) -> str:
    kinds, pids_file = args["kinds"], args["pids_file"]
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
    return "the children did not start"


def main() -> None:
    if os.environ.get("HOSTILE_EXIT") == "1":
        print("no licence key found", file=sys.stderr, flush=True)
        sys.exit(3)
    stubborn = os.environ.get("HOSTILE_STUBBORN") == "1"
    if stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    mute = os.environ.get("HOSTILE_MUTE", "")
    default = "big,echo,notify_big,add,crash,detach"
    tools = os.environ.get("HOSTILE_TOOLS", default).split(",")
    for raw in sys.stdin.buffer:
        msg = json.loads(raw)
        method, rid = msg.get("method"), msg.get("id")
        if rid is None or method == mute:
            continue
        params = msg.get("params") or {}
        if method == "initialize":
            result = {
                "protocolVersion": params.get("protocolVersion"),
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "hostile", "version": "1"},
            }
            send({"jsonrpc": "2.0", "id": rid, "result": result})
        elif method == "tools/list":
            listed = [
                {"name": name, "description": f"tool {name}", "inputSchema": {"type": "object"}}
                for name in tools
            ]
            send({"jsonrpc": "2.0", "id": rid, "result": {"tools": listed}})
        elif method == "tools/call":
            name, args = params.get("name"), params.get("arguments") or {}
            if name == "big":
                big(rid, args)
            elif name == "notify_big":
                notify_big(rid, args)
            elif name == "crash":
                print("hostile: crashing on purpose", file=sys.stderr, flush=True)
                if args.get("group"):
                    os.killpg(0, signal.SIGKILL)  # and every process in its group
                os._exit(3)
            else:
                if name == "add":
                    tools.append(args["name"])
                    send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
                text = detach(args) if name == "detach" else args.get("text", name)
                result = {"content": [{"type": "text", "text": text}]}
                send({"jsonrpc": "2.0", "id": rid, "result": result})
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": rid, "result": {}})
        else:
            error = {"code": -32601, "message": f"no method {method}"}
            send({"jsonrpc": "2.0", "id": rid, "error": error})
    while stubborn:
        time.sleep(3600)


if __name__ == "__main__":
    main()
