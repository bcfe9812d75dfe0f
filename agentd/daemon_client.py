"""A daemon the command line starts for itself (`agentd chat`, `agentd export`,
`agentd import`), and a JSON-RPC client over its stdio: the same protocol an editor
speaks, so these commands go through the same code as an editor's requests."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from argparse import Namespace
from typing import Any


def daemon_command(args: Namespace, *extra: str) -> list[str]:
    """`python -m agentd` with the data dir and configuration this command was given."""
    command = [sys.executable, "-m", "agentd"]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.config:
        command += ["--config", args.config]
    return [*command, *extra]


class RpcClient:
    """JSON-RPC over the daemon's stdio, LSP framing."""

    def __init__(self, proc: asyncio.subprocess.Process, on_notify: Any, on_request: Any) -> None:
        self.proc = proc
        self.on_notify = on_notify
        self.on_request = on_request
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader = asyncio.create_task(self._read())

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, msg: dict[str, Any]) -> None:
        body = json.dumps(msg).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async def call(self, method: str, params: Any = None) -> Any:
        msg_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        self._send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params or {}})
        return await future

    def notify(self, method: str, params: Any = None) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params or {}})

    async def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = await out.readline()
                if not line:
                    for waiting in self._pending.values():
                        if not waiting.done():
                            waiting.set_exception(ConnectionError("agentd exited"))
                    return
                if not line.strip():
                    break
                name, _, value = line.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length is None:
                continue
            msg = json.loads(await out.readexactly(length))
            if "method" in msg and "id" in msg:
                self.spawn(self._answer(msg))
            elif "method" in msg:
                self.on_notify(msg["method"], msg.get("params") or {})
            else:
                msg_id = msg.get("id")
                fut = self._pending.pop(msg_id, None) if isinstance(msg_id, int) else None
                if fut is not None and not fut.done():
                    if "error" in msg:
                        fut.set_exception(RpcFailure(msg["error"]))
                    else:
                        fut.set_result(msg.get("result"))

    async def _answer(self, msg: dict[str, Any]) -> None:
        result = await self.on_request(msg["method"], msg.get("params") or {})
        self._send({"jsonrpc": "2.0", "id": msg["id"], "result": result})


class RpcFailure(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", "error"))
        self.code = error.get("code")
        self.data = error.get("data")
