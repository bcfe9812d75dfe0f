"""`agentd export SESSION_ID [--format json|markdown]` and `agentd import FILE`: a session
to standard output, an export to a new session. Each starts a daemon on the same data
dir and configuration and asks it (`session/export`, `session/import`), as an editor
would: a session running in another agentd, a damaged file, an unknown id get the
answers an editor gets, as one line on stderr."""

from __future__ import annotations

import asyncio
import os
import sys
from argparse import Namespace
from collections.abc import Awaitable, Callable
from typing import Any

from agentd.chat.daemon import ChatError, Daemon, RpcFailure

# The daemon's default frame limit (agentd.config.DEFAULT_MAX_FRAME_BYTES): an import
# over it goes to a daemon started with a limit that fits (the file's JSON escaping as
# a string can double it).
DEFAULT_FRAME = 32 * 1024 * 1024


async def _with_daemon(
    args: Namespace, work: Callable[[Daemon], Awaitable[int]], *extra: str
) -> int:
    daemon: Daemon | None = None
    try:
        # One request, then gone: a daemon of its own (its frame limit is its own too).
        daemon = await Daemon.start(args, dict(os.environ), "--no-shared", *extra)
        try:
            await daemon.call(
                "initialize",
                {
                    "processId": os.getpid(),
                    "clientInfo": {"name": f"agentd {args.command}"},
                    "workspaceRoot": os.getcwd(),
                },
            )
        except ChatError:
            raise ChatError(await daemon.exit_reason(starting=True)) from None
        daemon.notify("initialized")
        return await work(daemon)
    except RpcFailure as exc:
        sys.stderr.write(f"agentd {args.command}: {exc} ({exc.code})\n")
        return 1
    except ChatError as exc:
        sys.stderr.write(f"agentd {args.command}: {exc}\n")
        return exc.code
    finally:
        if daemon is not None:
            await daemon.stop()


def run_export(args: Namespace) -> int:
    async def work(daemon: Daemon) -> int:
        result = await daemon.call(
            "session/export", {"sessionId": args.session_id, "format": args.format}
        )
        content = result["content"]
        sys.stdout.write(content if content.endswith("\n") else content + "\n")
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
    params: dict[str, Any] = {"content": content}
    if args.workspace:
        params["workspaceRoot"] = os.path.abspath(args.workspace)
    frame = len(raw) * 2 + 65536
    extra = ["--max-frame-bytes", str(frame)] if frame > DEFAULT_FRAME else []

    async def work(daemon: Daemon) -> int:
        session = (await daemon.call("session/import", params))["session"]
        sys.stdout.write(f"{session['id']}  {session['title']}\n")
        return 0

    return asyncio.run(_with_daemon(args, work, *extra))
