"""`agentd export SESSION_ID [--format json|markdown]` and `agentd import FILE`: a session
to standard output, an export to a new session. Each starts a daemon on the same data
dir and configuration and asks it (`session/export`, `session/import`), as an editor
would: a session running in another agentd, a damaged file, an unknown id get the
answers an editor gets."""

from __future__ import annotations

import asyncio
import os
import sys
from argparse import Namespace
from collections.abc import Awaitable, Callable
from typing import Any

from agentd import file_modes
from agentd.daemon_client import RpcClient, RpcFailure, daemon_command

# The daemon's default frame limit (agentd.config.DEFAULT_MAX_FRAME_BYTES); an import
# over it is sent to a daemon started with a limit that fits (JSON escaping of the file
# as a string can double it).
DEFAULT_FRAME = 32 * 1024 * 1024


async def _with_daemon(
    args: Namespace, work: Callable[[RpcClient], Awaitable[int]], *extra: str
) -> int:
    proc = await asyncio.create_subprocess_exec(
        *daemon_command(args, *extra),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        umask=file_modes.user_umask(),
    )

    async def no_requests(method: str, params: dict[str, Any]) -> Any:
        return None

    client = RpcClient(proc, lambda method, params: None, no_requests)
    try:
        await client.call(
            "initialize",
            {
                "processId": os.getpid(),
                "clientInfo": {"name": f"agentd {args.command}"},
                "workspaceRoot": os.getcwd(),
            },
        )
        client.notify("initialized")
        return await work(client)
    except RpcFailure as exc:
        sys.stderr.write(f"agentd {args.command}: {exc} ({exc.code})\n")
        return 1
    except ConnectionError as exc:
        sys.stderr.write(f"agentd {args.command}: {exc}\n")
        return 1
    finally:
        try:
            async with asyncio.timeout(10):
                await client.call("shutdown")
                client.notify("exit")
                await proc.wait()
        except (TimeoutError, ConnectionError, RpcFailure):
            proc.kill()
            await proc.wait()


def run_export(args: Namespace) -> int:
    async def work(client: RpcClient) -> int:
        result = await client.call(
            "session/export", {"sessionId": args.session_id, "format": args.format}
        )
        sys.stdout.write(result["content"])
        if not result["content"].endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        return 0

    return asyncio.run(_with_daemon(args, work))


def run_import(args: Namespace) -> int:
    try:
        if args.file == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as f:
                raw = f.read()
    except OSError as exc:
        sys.stderr.write(f"agentd import: {args.file}: {exc.strerror}\n")
        return 1
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        sys.stderr.write(f"agentd import: {args.file}: not UTF-8 text ({exc.reason})\n")
        return 1
    extra: list[str] = []
    if len(raw) * 2 + 65536 > DEFAULT_FRAME:
        extra = ["--max-frame-bytes", str(len(raw) * 2 + 65536)]

    params: dict[str, Any] = {"content": content}
    if args.workspace:
        params["workspaceRoot"] = os.path.abspath(args.workspace)

    async def work(client: RpcClient) -> int:
        session = (await client.call("session/import", params))["session"]
        sys.stdout.write(f"{session['id']}  {session['title']}\n")
        return 0

    return asyncio.run(_with_daemon(args, work, *extra))
