"""The daemon `agentd chat` (and `agentd export`, `agentd import`) spawns, and JSON-RPC
over its stdio: frames are read with agentd's own parser (`agentd.framing`), the one the
server reads its input with."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import signal
import sys
from argparse import Namespace
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from agentd import file_modes, framing

# Lines of the daemon's stderr kept to explain its exit.
STDERR_TAIL = 50
# How long a stopping daemon gets (it finishes a title being written, up to 5 s).
STOP_TIMEOUT_S = 10.0
# The largest message accepted from the daemon. It is agentd itself, not an untrusted
# peer: the limit only bounds memory, far above what a session's messages amount to.
MAX_FRAME_BYTES = 1 << 30

# `-m agentd` imports the installed agentd whatever the current directory holds: -P
# keeps the current directory off sys.path, where a folder named `agentd` (a clone, a
# project of that name) or a module named like a dependency would be imported first.
# (The console script does not put the current directory on sys.path either.)
DAEMON_COMMAND = [sys.executable, "-P", "-m", "agentd"]

# A record of agentd's log format (cli.setup_logging): the message is the cause.
_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")


class ChatError(Exception):
    """An expected failure: one line for the user (printed as `agentd: <message>`)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class DaemonExited(ChatError):
    """The daemon's output ended: it exited (or closed stdout)."""


class RpcFailure(Exception):
    """A JSON-RPC error response from the daemon."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", "error"))
        self.code = error.get("code")
        self.data = error.get("data")


Notify = Callable[[str, dict[str, Any]], None]
# Answers a request from the daemon; None: not handled (a -32601 error).
Answer = Callable[[str, dict[str, Any]], Awaitable[Any]]


class Daemon:
    """The spawned agentd. Its stderr is read all along (a daemon that fills the pipe
    would block) and its last lines are kept to explain an exit; with `echo` (-v) they
    are copied to our stderr. Otherwise its log stays off the terminal: what it warns
    about (retries, configuration problems) the client says in its own words."""

    def __init__(self, proc: asyncio.subprocess.Process, *, echo: bool) -> None:
        self.proc = proc
        self.echo = echo
        self.on_notify: Notify = lambda method, params: None
        self.on_request: Answer | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.gone = False
        self._stderr = asyncio.create_task(self._read_stderr())
        self._reader = asyncio.create_task(self._read_stdout())

    @classmethod
    async def start(cls, args: Namespace, env: dict[str, str], *extra: str) -> Daemon:
        """`extra`: more options for the daemon (`--max-frame-bytes`)."""
        argv = [*DAEMON_COMMAND, *extra]
        if args.verbose:
            argv.append("-" + "v" * args.verbose)
        for option, value in (
            ("--data-dir", args.data_dir),
            ("--config", args.config),
            ("--log-file", args.log_file),
        ):
            if value:
                argv += [option, value]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                # Its own session: Ctrl-C in the terminal reaches this client (which
                # stops the answer), not the daemon.
                start_new_session=True,
                # The daemon keeps the user's umask for what its tools make in the
                # workspace.
                umask=file_modes.user_umask(),
            )
        except OSError as exc:
            raise ChatError(f"cannot start the daemon ({argv[0]}): {exc.strerror or exc}") from None
        return cls(proc, echo=args.verbose > 0)

    # --- messages ---------------------------------------------------------------------

    def _send(self, msg: dict[str, Any]) -> None:
        stdin = self.proc.stdin
        if self.gone or stdin is None or stdin.is_closing():
            raise DaemonExited("the daemon is not running")
        stdin.write(framing.encode(json.dumps(msg).encode()))

    def request(self, method: str, params: Any = None) -> tuple[int, asyncio.Future[Any]]:
        """Send a request; its id (for `$/cancelRequest`) and the future of its result."""
        msg_id = next(self._ids)
        self._send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params or {}})
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        return msg_id, future

    async def call(self, method: str, params: Any = None) -> Any:
        return await self.request(method, params)[1]

    def notify(self, method: str, params: Any = None) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params or {}})

    async def _read_stdout(self) -> None:
        out = self.proc.stdout
        assert out is not None
        parser = framing.FrameParser(MAX_FRAME_BYTES)
        while True:
            data = await out.read(65536)
            for event in parser.feed(data) if data else parser.feed_eof():
                if isinstance(event, framing.FramingError):
                    # A reply may be lost with it: waiting for it would hang.
                    self._fail_pending(
                        ChatError(f"unreadable output from the daemon: {event.message}")
                    )
                elif isinstance(event.message, dict):
                    self._dispatch(event.message)
            if not data:
                break
        self.gone = True
        self._fail_pending(DaemonExited("the daemon exited"))

    def _fail_pending(self, error: Exception) -> None:
        for waiting in self._pending.values():
            if not waiting.done():
                waiting.set_exception(error)
        self._pending.clear()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        raw_params = msg.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        if isinstance(method, str) and "id" in msg:
            task = asyncio.create_task(self._answer(msg["id"], method, params))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(method, str):
            self.on_notify(method, params)
        else:
            msg_id = msg.get("id")
            future = self._pending.pop(msg_id, None) if isinstance(msg_id, int) else None
            if future is not None and not future.done():
                if "error" in msg:
                    future.set_exception(RpcFailure(msg["error"] or {}))
                else:
                    future.set_result(msg.get("result"))

    async def _answer(self, msg_id: Any, method: str, params: dict[str, Any]) -> None:
        result = None if self.on_request is None else await self.on_request(method, params)
        with contextlib.suppress(DaemonExited):
            if result is None:
                error = {"code": -32601, "message": f"agentd chat does not handle {method}"}
                self._send({"jsonrpc": "2.0", "id": msg_id, "error": error})
            else:
                self._send({"jsonrpc": "2.0", "id": msg_id, "result": result})

    async def _read_stderr(self) -> None:
        err = self.proc.stderr
        assert err is not None
        partial = b""
        while data := await err.read(65536):
            if self.echo:
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    sys.stderr.buffer.write(data)
                    sys.stderr.flush()
            *lines, partial = (partial + data).split(b"\n")
            # (A line of any length: a payload logged at -vv can be megabytes.)
            partial = partial[-4096:]
            self._tail.extend(line[:4096].decode("utf-8", "replace").rstrip() for line in lines)
        if partial:
            self._tail.append(partial.decode("utf-8", "replace").rstrip())

    # --- ending -----------------------------------------------------------------------

    async def exit_reason(self, *, starting: bool) -> str:
        """One line: how the daemon ended and the last thing it said."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.proc.wait()
        # Its stderr ends with it, unless a process it started still holds the pipe.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await asyncio.shield(self._stderr)
        code = self.proc.returncode
        if code is None:
            how = "stopped answering"
        elif code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        when = " while starting" if starting else ""
        cause = self.last_words()
        return f"the daemon {how}{when}" + (f": {cause}" if cause else "")

    def last_words(self) -> str:
        """The last line of its stderr that says something: a traceback's exception line,
        or a log record's message."""
        for line in reversed(self._tail):
            text = line.strip()
            # (Python underlines the failing expression in a traceback with ^ and ~.)
            if not text or set(text) <= set("^~ "):
                continue
            return _LOG_RECORD.sub("", text)[:300]
        return ""

    async def stop(self) -> None:
        """shutdown (which aborts and persists runs), exit; killed if it does not end."""
        proc = self.proc
        if proc.returncode is None:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    if not self.gone:
                        await self.call("shutdown")
                        self.notify("exit")
                    await proc.wait()
            except (TimeoutError, ChatError, RpcFailure, ConnectionError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in (self._reader, self._stderr, *self._tasks):
            task.cancel()
        await asyncio.gather(self._reader, self._stderr, *self._tasks, return_exceptions=True)
