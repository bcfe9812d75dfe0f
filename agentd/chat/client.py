"""The conversation of one `agentd chat`: the session, the prompt, permission questions,
and what Ctrl-C means at each moment; `run_chat` is its entry point."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

from agentd.chat.daemon import ChatError, Daemon, DaemonExited, RpcFailure
from agentd.chat.line_input import INTERRUPTED, LineInput
from agentd.chat.renderer import Renderer

EXIT_FAILURE = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_OUTPUT_CLOSED = 128 + signal.SIGPIPE

HELP = """Commands:
  /new              start a new session (with the next message)
  /sessions         list recent sessions
  /resume ID        continue a session
  /title TEXT       rename this session
  /help             this help
  /quit             leave (Ctrl-D works too)
Ctrl-C stops the answer being written; at the prompt it clears the line, twice leaves."""


class ChatClient:
    """One `agentd chat`: the daemon, the terminal, the session, and what Ctrl-C means
    at each moment."""

    def __init__(self, args: Namespace, daemon: Daemon, renderer: Renderer) -> None:
        self.args = args
        self.daemon = daemon
        self.renderer = renderer
        self.input = LineInput(sys.stdin)
        self.interactive = self.input.tty
        self.session_id: str | None = args.session
        # A message being sent: its session/chat's request id once sent, and whether
        # Ctrl-C stopped it.
        self.sending = False
        self.chat_id: int | None = None
        self.stopping = False
        self.exit_code: int | None = None
        self.initialized = False
        self._forced = False
        # One permission question at a time (tool calls may run side by side).
        self._question = asyncio.Lock()
        # The task running `main`: leaving cancels it (never the task that stops the
        # daemon afterwards).
        self.task: asyncio.Task[int] | None = None
        daemon.on_notify = renderer.notify
        daemon.on_request = self.on_request
        renderer.on_closed = self.on_output_closed

    # --- leaving ----------------------------------------------------------------------

    def leave(self, code: int) -> None:
        """Leave now with `code`: `main` is cancelled; the daemon is stopped after it.
        Asked again while the daemon stops: it is told to end at once (SIGTERM: it
        still persists what runs), then killed."""
        if self.exit_code is None and self.task is not None and not self.task.done():
            self.exit_code = code
            self.task.cancel()
            return
        proc = self.daemon.proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                if self._forced:
                    proc.kill()
                else:
                    proc.terminate()
            self._forced = True

    def on_output_closed(self) -> None:
        # (Leaving already, the terminal gone: no reason to hurry the daemon's stop.)
        if self.exit_code is None:
            self.leave(EXIT_OUTPUT_CLOSED)

    def on_interrupt(self) -> None:
        # Lines piped in are a script: Ctrl-C ends it (as for `python < script.py`).
        scripted = not self.interactive and not self.args.prompt
        if self.sending and not self.stopping and not scripted:
            # Ctrl-C stops the answer, not the program. $/cancelRequest rather than
            # session/abort: it reaches the run even if it has not started yet.
            self.stopping = True
            self.input.interrupt()  # a permission question waiting: answered no
            if self.chat_id is not None:
                with contextlib.suppress(DaemonExited):
                    self.daemon.notify("$/cancelRequest", {"id": self.chat_id})
            return
        if not self.sending and self.interactive and self.input.interrupt():
            return  # at the prompt: the line is cleared
        # (Also a second Ctrl-C while an answer stops, or one while a command waits.)
        self.leave(EXIT_INTERRUPTED)

    # --- requests from the daemon ------------------------------------------------------

    async def on_request(self, method: str, params: dict[str, Any]) -> Any:
        if method != "permission/request":
            return None
        if self.args.allow_tools:
            return {"outcome": "allow_once"}
        async with self._question:
            if self.stopping:
                return {"outcome": "reject_once"}
            self.renderer.ask(f"allow {params.get('title')}? [y]es / [a]lways / [N]o: ")
            line = await self.input.readline()
        answer = line.strip().lower() if isinstance(line, str) else ""
        if not isinstance(line, str) or not self.interactive:
            self.renderer.ask("\n")  # (no Enter echoed it)
        outcome = {
            "y": "allow_once",
            "yes": "allow_once",
            "a": "allow_always",
            "always": "allow_always",
        }.get(answer, "reject_once")
        return {"outcome": outcome}

    # --- the conversation --------------------------------------------------------------

    async def session(self) -> str:
        """The current session, created with the first message (not before: a chat
        opened and left must not leave an empty session behind)."""
        if self.session_id is None:
            params = {"model": self.args.model} if self.args.model else {}
            self.session_id = (await self.daemon.call("session/create", params))["session"]["id"]
        return self.session_id

    async def send(self, text: str) -> int:
        """One message and its answer; the exit code it means in one-shot mode."""
        self.sending, self.stopping = True, False
        try:
            session_id = await self.session()
            if self.stopping:  # Ctrl-C before the message left
                self.renderer.finish(None)
                return EXIT_INTERRUPTED
            self.chat_id, result = self.daemon.request(
                "session/chat",
                {
                    "sessionId": session_id,
                    "parts": [{"type": "text", "text": text}],
                    # Every built-in tool (those that change something ask first, unless
                    # --allow-tools) and every MCP tool.
                    "tools": ["*"],
                },
            )
            try:
                message = (await result)["message"]
            except RpcFailure as exc:
                if exc.code != -32800:
                    raise
                message = None  # cancelled by Ctrl-C: the stopped message is stored
        finally:
            self.sending, self.chat_id = False, None
        self.renderer.finish(message)
        if message is None or message.get("finishReason") == "aborted":
            return EXIT_INTERRUPTED if self.stopping else EXIT_FAILURE
        return EXIT_FAILURE if message.get("error") else 0

    async def main(self) -> int:
        await self.daemon.call(
            "initialize",
            {
                "processId": os.getpid(),
                "clientInfo": {"name": "agentd chat"},
                "workspaceRoot": os.getcwd(),
                "capabilities": {"permissionRequests": True},
            },
        )
        self.initialized = True
        self.daemon.notify("initialized")
        if self.args.list:
            await self.print_sessions()
            return 0
        if self.session_id and self.interactive:
            session = (await self.daemon.call("session/get", {"sessionId": self.session_id}))[
                "session"
            ]
            self.renderer.write(f"resuming: {session['title']} ({self.session_id})\n")
            await self.print_history(self.session_id)
        elif self.session_id:
            await self.daemon.call("session/get", {"sessionId": self.session_id})
        if self.args.prompt:
            return await self.send(" ".join(self.args.prompt))
        return await self.repl()

    async def repl(self) -> int:
        """The interactive chat, or the lines piped in: its exit code (piped, 1 when
        an answer failed, as a script that failed)."""
        write = self.renderer.write
        if self.interactive:
            write("Type a message; /help for commands.\n")
        interrupted = False  # the last key was a Ctrl-C at the prompt
        status = 0
        while True:
            if self.interactive:
                write("you> ")
            line = await self.input.readline()
            if line is INTERRUPTED:
                if interrupted:
                    write("\n")
                    return 0
                interrupted = True
                write("\n(Ctrl-C again or Ctrl-D to leave)\n")
                continue
            interrupted = False
            if not isinstance(line, str):
                if self.interactive:
                    write("\n")
                return status
            text = line.strip()
            if not text:
                continue
            try:
                if text.startswith("/") and not text.startswith(
                    ("/tool", "/stream", "/reason", "/error")
                ):
                    if await self.command(text):
                        return 0
                    continue
                if self.interactive:
                    write("agentd> ")
                if await self.send(text) == EXIT_FAILURE and not self.interactive:
                    status = EXIT_FAILURE
            except RpcFailure as exc:
                self.renderer.notice(f"agentd: {exc} ({exc.code})")
                status = status if self.interactive else EXIT_FAILURE

    async def command(self, text: str) -> bool:
        """A /command; True to leave."""
        command, _, rest = text.partition(" ")
        rest = rest.strip()
        write = self.renderer.write
        if command == "/quit":
            return True
        if command == "/help":
            write(HELP + "\n")
        elif command == "/new":
            self.session_id = None
            if self.interactive:
                write("new session: it starts with your next message\n")
        elif command == "/sessions":
            await self.print_sessions()
        elif command == "/resume" and rest:
            try:
                await self.daemon.call("session/get", {"sessionId": rest})
            except RpcFailure as exc:
                self.renderer.notice(f"cannot resume: {exc}")
                return False
            self.session_id = rest
            await self.print_history(rest)
        elif command == "/title" and rest:
            session_id = await self.session()
            await self.daemon.call("session/update", {"sessionId": session_id, "title": rest})
        else:
            self.renderer.notice("unknown command; /help lists them")
        return False

    async def print_sessions(self) -> None:
        page = await self.daemon.call("session/list", {"limit": 20})
        if not page["sessions"]:
            self.renderer.write("no sessions yet\n")
        for s in page["sessions"]:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["time"]["updated"] / 1000))
            busy = " (busy)" if s["status"] != "idle" else ""
            self.renderer.write(f"{s['id']}  {when}  {s['title']}{busy}\n")

    async def print_history(self, session_id: str) -> None:
        messages = (
            await self.daemon.call("session/messages", {"sessionId": session_id, "limit": 10})
        )["messages"]
        for m in messages:
            text = "".join(p.get("text", "") for p in m["parts"] if p["type"] == "text")
            who = "you" if m["role"] == "user" else "agentd"
            self.renderer.write(f"{who}> {text}\n")


def _offline_banner(config_path: Path) -> str:
    return (
        "agentd: no model configured, using the bundled scripted model (offline).\n"
        "        To chat with a real model, set OPENAI_BASE_URL, OPENAI_API_KEY and\n"
        f"        AGENTD_MODEL, or default_model in {config_path}.\n"
    )


async def _chat(args: Namespace, renderer: Renderer, banner: str | None) -> int:
    """The chat; `banner` set: offline, with the scripted model."""
    env = dict(os.environ)
    scripted = None
    if banner is not None:
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
        renderer.notice(banner)
    daemon = None
    loop = asyncio.get_running_loop()
    try:
        # Offline, the scripted model lives in this process: so does its daemon.
        daemon = await Daemon.start(args, env, *(["--no-shared"] if scripted else []))
        client = ChatClient(args, daemon, renderer)
        client.task = asyncio.create_task(client.main())
        loop.add_signal_handler(signal.SIGINT, client.on_interrupt)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, client.leave, 128 + sig)
        try:
            return await client.task
        except asyncio.CancelledError:
            if client.exit_code is None:
                raise
            return client.exit_code
        except DaemonExited:
            reason = await daemon.exit_reason(starting=not client.initialized)
            renderer.notice(f"agentd: {reason}")
            return EXIT_FAILURE
        except RpcFailure as exc:
            renderer.notice(f"agentd: {exc} ({exc.code})")
            return EXIT_FAILURE
    finally:
        # (Ctrl-C while the daemon stops: see ChatClient.leave.)
        if daemon is not None:
            await daemon.stop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if scripted is not None:
            await scripted.stop()


def run_chat(args: Namespace) -> int:
    from agentd.config import default_config_path, load_config

    renderer = Renderer(sys.stdout, sys.stderr)
    config_path = Path(args.config).expanduser() if args.config else None
    config = load_config(path=config_path, data_dir=args.data_dir)
    # Before anything else is said; the daemon's own copy of these goes to its log.
    for problem in config.problems:
        renderer.notice(f"agentd: configuration: {problem}")
    # Listing sessions needs no model.
    offline = not args.list and (
        args.offline or not (args.model or config.default_model is not None)
    )
    banner = _offline_banner(config_path or default_config_path(os.environ)) if offline else None
    try:
        return asyncio.run(_chat(args, renderer, banner))
    except KeyboardInterrupt:  # before the client took Ctrl-C over, or after
        return EXIT_INTERRUPTED
    except ChatError as exc:
        renderer.notice(f"agentd: {exc}")
        return exc.code
