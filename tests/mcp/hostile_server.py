"""An MCP server over stdio that misbehaves on the wire, for agentd's tests.

Written without the SDK on purpose: the SDK's server API cannot put a response's id
last, write a line with no end, or never answer `tools/list`. It speaks just enough
JSON-RPC (initialize, tools/list, tools/call, ping), one line at a time.

Environment:
- HOSTILE_TOOLS: comma-separated tool names to list (default: big,echo,notify_big);
  a tool not named below answers with its own name;
- HOSTILE_MUTE: a method never answered (`initialize` or `tools/list`);
- HOSTILE_EXIT: print HOSTILE_EXIT to stderr and exit 3 at once;
- HOSTILE_STUBBORN=1: ignore SIGTERM and keep running after stdin closes.

Tools:
- big {bytes, id: "first" | "last" | "middle", end: true}: a text result of `bytes`
  bytes, its id where asked; with `end: false` the line never ends (the server then
  stalls);
- notify_big {bytes}: a notification of `bytes` bytes, then a small answer;
- echo {text}.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

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


def main() -> None:
    if os.environ.get("HOSTILE_EXIT"):
        print(os.environ["HOSTILE_EXIT"], file=sys.stderr, flush=True)
        sys.exit(3)
    stubborn = os.environ.get("HOSTILE_STUBBORN") == "1"
    if stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    mute = os.environ.get("HOSTILE_MUTE", "")
    tools = os.environ.get("HOSTILE_TOOLS", "big,echo,notify_big").split(",")
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
            else:
                text = args.get("text", name)
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
