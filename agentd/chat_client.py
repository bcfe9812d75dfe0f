"""`agentd chat`: a terminal client. It spawns a daemon, speaks the wire protocol to it
like any editor would, and prints answers as they stream.

With no model configured (or `--offline`), it starts the bundled scripted model on
loopback and points the daemon at it, so a newcomer sees a streamed answer with no key
and no network. Ctrl-C aborts the running answer; at the prompt it exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from argparse import Namespace
from typing import Any

from agentd import file_modes
from agentd.daemon_client import RpcClient, RpcFailure, daemon_command

# Lines of a tool's output shown under it (the model gets all of it).
PREVIEW_LINES = 8

OFFLINE_BANNER = (
    "agentd: no model configured, using the bundled scripted model (offline).\n"
    "        To chat with a real model, set OPENAI_BASE_URL, OPENAI_API_KEY and\n"
    "        AGENTD_MODEL (or write ~/.config/agentd/config.toml).\n"
)
HELP = """Commands:
  /new              start a new session
  /sessions         list recent sessions
  /resume ID        continue a session
  /title TEXT       rename this session
  /help             this help
  /quit             leave (Ctrl-D works too)
Ctrl-C stops the answer being written."""


class Renderer:
    """Prints a run's notifications: text as it streams, tools one line each."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.tty = out.isatty()
        self.kinds: dict[str, str] = {}
        self.last_kind: str | None = None
        self.tool_status: dict[str, str] = {}
        self.user_messages: set[str] = set()

    def _dim(self, text: str) -> str:
        return f"\x1b[2m{text}\x1b[0m" if self.tty else text

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        if method == "message/updated" and params["message"]["role"] == "user":
            self.user_messages.add(params["message"]["id"])
        elif method == "part/updated" and params["messageId"] not in self.user_messages:
            self.part(params["part"])
        elif method == "part/delta" and params["messageId"] not in self.user_messages:
            kind = self.kinds.get(params["partId"], "text")
            self.write(self._dim(params["delta"]) if kind == "reasoning" else params["delta"])
        elif method == "session/status" and params.get("status") == "retry":
            wait = max(0, (params.get("nextRetryAt", 0) - time.time() * 1000) / 1000)
            self.write(
                self._dim(
                    f"\n[retrying: {params.get('message', '')}; attempt "
                    f"{params.get('attempt')} in {wait:.1f}s]\n"
                )
            )

    def part(self, part: dict[str, Any]) -> None:
        kind = part["type"]
        if kind in ("text", "reasoning"):
            if part["id"] not in self.kinds:
                self.kinds[part["id"]] = kind
                if self.last_kind is not None and self.last_kind != kind:
                    self.write("\n")
                if kind == "reasoning":
                    self.write(self._dim("(thinking) "))
                self.last_kind = kind
        elif kind == "tool":
            state = part["state"]
            status = state["status"]
            if self.tool_status.get(part["id"]) == status or status == "pending":
                return
            self.tool_status[part["id"]] = status
            label = state.get("title") or part["tool"]
            if status == "running":
                self.write(self._dim(f"\n[tool {label}] running...\n"))
            elif status == "completed":
                output = state.get("output", "").rstrip("\n").split("\n")
                shown = "".join(f"  {line[:120]}\n" for line in output[:PREVIEW_LINES])
                more = len(output) - PREVIEW_LINES
                rest = f"  ... {more} more lines\n" if more > 0 else ""
                self.write(self._dim(f"[tool {label}] done\n{shown}{rest}"))
            elif status == "error":
                self.write(self._dim(f"[tool {part['tool']}] failed: {state.get('error')}\n"))
            self.last_kind = "tool"

    def finish(self, message: dict[str, Any]) -> None:
        self.write("\n")
        reason = message.get("finishReason")
        if message.get("error"):
            err = message["error"]
            self.write(f"error: {err['name']}: {err['message']}\n")
        elif reason == "aborted":
            self.write(self._dim("[stopped]\n"))
        elif reason not in (None, "stop"):
            self.write(self._dim(f"[finished: {reason}]\n"))
        usage = message.get("usage") or {}
        if usage and self.tty:
            cost = message.get("cost") or 0
            self.write(
                self._dim(
                    f"[{usage.get('inputTokens', 0)} in, "
                    f"{usage.get('outputTokens', 0)} out, ${cost:.4f}]\n"
                )
            )
        self.kinds.clear()
        self.last_kind = None


def _model_configured(model: str | None, config_path: str | None) -> bool:
    if model or os.environ.get("AGENTD_MODEL"):
        return True
    from pathlib import Path

    from agentd.config import load_config

    path = Path(config_path).expanduser() if config_path else None
    return load_config(path=path).default_model is not None


async def _chat(args: Namespace) -> int:
    env = dict(os.environ)
    scripted = None
    if args.offline or not _model_configured(args.model, args.config):
        from agentd.scripted_model import ScriptedModelServer

        scripted = ScriptedModelServer()
        await scripted.start()
        env.update(
            {
                "OPENAI_BASE_URL": scripted.base_url,
                "OPENAI_API_KEY": "offline",
                "AGENTD_MODEL": "scripted",
            }
        )
        sys.stderr.write(OFFLINE_BANNER)
    daemon_args = daemon_command(args)
    # Its own session: Ctrl-C in the terminal reaches this client (which aborts the
    # answer), not the daemon.
    proc = await asyncio.create_subprocess_exec(
        *daemon_args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
        # The daemon keeps the user's umask for what its tools make in the workspace.
        umask=file_modes.user_umask(),
    )
    renderer = Renderer(sys.stdout)
    loop = asyncio.get_running_loop()

    async def on_request(method: str, params: dict[str, Any]) -> Any:
        if method == "permission/request":
            if args.allow_tools:
                return {"outcome": "allow_once"}
            renderer.write(f"\nallow {params['title']}? [y]es / [a]lways / [N]o: ")
            answer = (await loop.run_in_executor(None, sys.stdin.readline)).strip().lower()
            outcome = {
                "y": "allow_once",
                "yes": "allow_once",
                "a": "allow_always",
                "always": "allow_always",
            }.get(answer, "reject_once")
            return {"outcome": outcome}
        return None

    client = RpcClient(proc, renderer.notify, on_request)
    try:
        await client.call(
            "initialize",
            {
                "processId": os.getpid(),
                "clientInfo": {"name": "agentd chat"},
                "workspaceRoot": os.getcwd(),
                "capabilities": {"permissionRequests": True},
            },
        )
        client.notify("initialized")
        if args.list:
            await _print_sessions(client)
            return 0
        session_id = args.session
        if session_id:
            session = (await client.call("session/get", {"sessionId": session_id}))["session"]
            print(f"resuming: {session['title']} ({session_id})")
            await _print_history(client, session_id)
        else:
            session_id = (
                await client.call("session/create", {"model": args.model} if args.model else {})
            )["session"]["id"]
        if args.prompt:
            return await _send(client, renderer, session_id, " ".join(args.prompt))
        return await _repl(client, renderer, session_id)
    except RpcFailure as exc:
        sys.stderr.write(f"agentd: {exc} ({exc.code})\n")
        return 1
    finally:
        try:
            async with asyncio.timeout(10):
                await client.call("shutdown")
                client.notify("exit")
                await proc.wait()
        except (TimeoutError, ConnectionError, RpcFailure):
            proc.kill()
        if scripted is not None:
            await scripted.stop()


async def _send(client: RpcClient, renderer: Renderer, session_id: str, text: str) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(
        client.call(
            "session/chat",
            {
                "sessionId": session_id,
                "parts": [{"type": "text", "text": text}],
            },
        )
    )

    def on_sigint() -> None:
        # Ctrl-C stops the answer, not the program.
        client.spawn(client.call("session/abort", {"sessionId": session_id}))

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        result = await task
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    renderer.finish(result["message"])
    return 1 if result["message"].get("error") else 0


async def _print_sessions(client: RpcClient) -> None:
    page = await client.call("session/list", {"limit": 20})
    if not page["sessions"]:
        print("no sessions yet")
    for s in page["sessions"]:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["time"]["updated"] / 1000))
        busy = " (busy)" if s["status"] != "idle" else ""
        print(f"{s['id']}  {when}  {s['title']}{busy}")


async def _print_history(client: RpcClient, session_id: str) -> None:
    messages = (await client.call("session/messages", {"sessionId": session_id, "limit": 10}))[
        "messages"
    ]
    for m in messages:
        text = "".join(p.get("text", "") for p in m["parts"] if p["type"] == "text")
        who = "you" if m["role"] == "user" else "agentd"
        print(f"{who}> {text}")


async def _repl(client: RpcClient, renderer: Renderer, session_id: str) -> int:
    loop = asyncio.get_running_loop()
    print("Type a message; /help for commands.")
    while True:
        sys.stdout.write("you> ")
        sys.stdout.flush()
        try:
            line = await loop.run_in_executor(None, sys.stdin.readline)
        except KeyboardInterrupt:
            return 0
        if not line:
            print()
            return 0
        text = line.strip()
        if not text:
            continue
        if text.startswith("/") and not text.startswith(("/tool", "/stream", "/reason", "/error")):
            command, _, rest = text.partition(" ")
            if command == "/quit":
                return 0
            if command == "/help":
                print(HELP)
            elif command == "/new":
                session_id = (await client.call("session/create", {}))["session"]["id"]
                print(f"new session {session_id}")
            elif command == "/sessions":
                await _print_sessions(client)
            elif command == "/resume" and rest:
                try:
                    await client.call("session/get", {"sessionId": rest.strip()})
                except RpcFailure as exc:
                    print(f"cannot resume: {exc}")
                    continue
                session_id = rest.strip()
                await _print_history(client, session_id)
            elif command == "/title" and rest:
                await client.call("session/update", {"sessionId": session_id, "title": rest})
            else:
                print("unknown command; /help lists them")
            continue
        sys.stdout.write("agentd> ")
        await _send(client, renderer, session_id, text)


def run_chat(args: Namespace) -> int:
    try:
        return asyncio.run(_chat(args))
    except KeyboardInterrupt:
        return 130
