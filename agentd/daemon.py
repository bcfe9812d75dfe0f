"""The native daemon process: one session core (`SessionCore`: storage, runs, MCP servers,
the model clients) serving editors' connections (`agentd.server.NativeConnection`).

- Unshared (`serve_alone`): the one editor on stdin/stdout, for the life of the process.
  Its end (end of input, `exit`) ends the process: runs are aborted and persisted.
- Shared (`serve_shared`, `agentd daemon`): the user's daemon, listening on a Unix
  socket (`agentd.shared_socket`). A forwarder (`agentd.forwarder`) hands it the
  editor's stdin and stdout with its hello; the daemon serves them directly, and
  writes the connection's exit code back to the forwarder when it ends. The forwarder's
  end (kill -9, a reload) ends its connection too. When a connection ends, the runs it
  started go on (`on_disconnect = "continue"`) or are aborted (`"abort"`). The daemon
  exits once no connection and no run has been left for `idle_exit_s`, or as soon as
  none is left when its socket is no longer its own (removed, replaced: no editor can
  reach it), and at once on SIGTERM, after persisting.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import resource
import signal
import socket
import sys
import threading
from typing import Any

from agentd import shared_socket
from agentd.config import Config
from agentd.editor import EditorProcess
from agentd.editors import Editors
from agentd.front_end import SessionCore
from agentd.server import NativeConnection
from agentd.stdio import fileno

logger = logging.getLogger(__name__)

# How often an idle daemon looks at the clock and at its socket.
IDLE_CHECK_S = 5.0
# A forwarder that connects must say hello (its descriptors) within this.
HELLO_TIMEOUT_S = 10.0
# Descriptors kept free for the runs of the editors attached (session logs, run locks,
# the model's connections, commands' pipes): an editor that would leave fewer is refused.
DESCRIPTORS_KEPT = 32
# When nothing can be accepted (out of memory, or of descriptors with none in reserve),
# the listener is not watched for this long: its backlog would keep it readable, and the
# loop would spin on accept.
ACCEPT_RETRY_S = 1.0


class Daemon(SessionCore):
    def __init__(self, config: Config) -> None:
        self.editors = Editors()
        super().__init__(config, self.editors)
        self.config = config
        self._connections: set[NativeConnection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping: asyncio.Event | None = None
        self._logs: EditorLogs | None = None
        # A descriptor held in reserve: at the process's limit it is freed to accept the
        # forwarder waiting and tell it why it is refused (it then serves its editor
        # itself) instead of leaving it waiting in the backlog.
        self._spare: int | None = None

    # --- unshared ----------------------------------------------------------------------

    async def serve_alone(self, stdin_fd: int | None, stdout_fd: int | None) -> int:
        connection = NativeConnection(self, self.editors, keep_runs=lambda: False)
        self._connections.add(connection)
        loop = asyncio.get_running_loop()
        # SIGTERM / SIGINT end the daemon the way `exit` after end of input does: runs are
        # aborted and persisted, tool-context files released.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, connection.exit, 0)
        return await connection.serve(stdin_fd, stdout_fd, then=self.close)

    # --- shared ------------------------------------------------------------------------

    async def serve_shared(
        self, listener: socket.socket, path: str, *, editor_logs: bool = True
    ) -> int:
        """Serve every connection the listener accepts until idle or SIGTERM."""
        loop = asyncio.get_running_loop()
        self._stopping = stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        if editor_logs:
            root = logging.getLogger()
            self._logs = EditorLogs(root.handlers[0].formatter if root.handlers else None)
            root.addHandler(self._logs)
        listener.setblocking(False)
        self._spare = _spare_descriptor()
        loop.add_reader(listener.fileno(), self._accept, listener)
        # A daemon lives long: what the first turn needs loads now, not at its start.
        self.runs.preload_provider()
        self.ready()
        ours = os.stat(path)
        idle_s = self.config.daemon.idle_exit_s
        idle_since = loop.time()
        try:
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(IDLE_CHECK_S, idle_s)):
                        await stopping.wait()
                if self._tasks or self.runs.busy():
                    idle_since = loop.time()
                    continue
                if not _still_ours(path, ours):
                    logger.info("the socket %s is gone or another's: exiting", path)
                    break
                if loop.time() - idle_since >= idle_s:
                    logger.info("idle for %.0f s: exiting", idle_s)
                    break
        finally:
            stopping.set()
            loop.remove_reader(listener.fileno())
            if self._spare is not None:
                os.close(self._spare)
                self._spare = None
            if _still_ours(path, ours):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            listener.close()
            for connection in list(self._connections):
                connection.exit(0)
            if self._tasks:
                await asyncio.wait(self._tasks)
            await self.close()
        return 0

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self._spare is not None:
                    try:
                        self._refuse_at_limit(listener)
                        continue
                    except (BlockingIOError, InterruptedError):
                        return  # nobody was waiting
                    except OSError as again:
                        exc = again
                logger.warning("accept failed: %s; trying again in %.0f s", exc, ACCEPT_RETRY_S)
                loop = asyncio.get_running_loop()
                loop.remove_reader(listener.fileno())
                loop.call_later(ACCEPT_RETRY_S, self._watch, listener)
                return
            try:
                uid = shared_socket.peer_uid(sock)
            except OSError:
                uid = -1
            if uid != os.getuid():
                logger.warning("refused a connection from uid %s", uid)
                sock.close()
                continue
            sock.setblocking(False)
            task = asyncio.ensure_future(self._serve_forwarded(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _watch(self, listener: socket.socket) -> None:
        if self._stopping is not None and not self._stopping.is_set():
            asyncio.get_running_loop().add_reader(listener.fileno(), self._accept, listener)

    def _refuse_at_limit(self, listener: socket.socket) -> None:
        """At the open-file limit, where accept fails even when nobody waits: accept with
        the reserve descriptor and refuse the forwarder waiting. Raises what accept
        raises (BlockingIOError: nobody was waiting)."""
        assert self._spare is not None
        os.close(self._spare)
        try:
            sock, _ = listener.accept()
            _refuse(sock, f"it is at its limit of {_descriptor_limit()} open files")
            sock.close()
        finally:
            self._spare = _spare_descriptor()

    async def _serve_forwarded(self, sock: socket.socket) -> None:
        fds: list[int] = []
        try:
            admitted = await self._admit(sock, fds)
            if admitted is None:
                return
            hello, process = admitted
            try:
                code = await self._serve_connection(sock, fds[0], fds[1], hello, process)
            except Exception:
                logger.exception("serving an editor failed")
                code = 1
            _tell(sock, {"exit": code})
        finally:
            sock.close()
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _admit(
        self, sock: socket.socket, fds: list[int]
    ) -> tuple[dict[str, Any], EditorProcess | None] | None:
        """The hello of a forwarder whose editor this daemon now serves (its stdin and
        stdout added to `fds`), with that editor's environment; None when it is not
        served: refused (told why), exiting, or the forwarder gave up waiting."""
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                hello, received = await _receive_hello(sock)
            fds.extend(received)
            process = _editor_process(hello)
        except TimeoutError:
            _refuse(sock, f"no hello within {HELLO_TIMEOUT_S:.0f} s")
            return None
        except (OSError, ValueError) as exc:
            _refuse(sock, f"its hello: {exc}")
            return None
        if self._stopping is not None and self._stopping.is_set():
            return None  # exiting: the forwarder, told nothing, connects again
        if (left := _descriptors_left()) is not None and left < _kept():
            _refuse(sock, f"it is near its limit of {_descriptor_limit()} open files")
            return None
        # The editor's pipes become the daemon's once the forwarder, told it may let go of
        # its copies, says it did; one that gave up waiting (it serves its editor itself)
        # closes instead, and the pipes are never touched.
        _tell(sock, {"ready": True})
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                await _readable(sock)
            go = sock.recv(shared_socket.MESSAGE_MAX)
        except (TimeoutError, OSError):
            return None
        return (hello, process) if go == shared_socket.GO else None

    async def _serve_connection(
        self,
        sock: socket.socket,
        stdin_fd: int,
        stdout_fd: int,
        hello: dict[str, Any],
        process: EditorProcess | None,
    ) -> int:
        cwd = hello.get("cwd")
        keep = self.config.daemon.on_disconnect == "continue"
        stopping = self._stopping

        def keep_runs() -> bool:
            # The daemon ending (SIGTERM, idle) aborts and persists, as unshared.
            return keep and not (stopping is not None and stopping.is_set())

        connection = NativeConnection(
            self,
            self.editors,
            keep_runs=keep_runs,
            shared=True,
            cwd=cwd if isinstance(cwd, str) and cwd else None,
            process=process,
        )
        self._connections.add(connection)
        loop = asyncio.get_running_loop()

        def forwarder_said() -> None:
            # Nothing is written to the daemon after the hello: this is its end.
            try:
                data = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(sock.fileno())
                connection.exit(0)

        loop.add_reader(sock.fileno(), forwarder_said)
        if self._logs is not None:
            self._logs.attach(sock, self.config.problems)
        try:
            return await connection.serve(stdin_fd, stdout_fd)
        finally:
            loop.remove_reader(sock.fileno())
            if self._logs is not None:
                self._logs.detach(sock)
            self._connections.discard(connection)


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await readable
    finally:
        loop.remove_reader(sock.fileno())


async def _receive_hello(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The forwarder's hello (JSON) and the editor's stdin and stdout."""
    await _readable(sock)
    # (Room for one descriptor too many: more than two is refused, not cut to two.)
    data, fds, flags, _addr = socket.recv_fds(
        sock, shared_socket.HELLO_MAX, 3, socket.MSG_CMSG_CLOEXEC
    )
    if len(fds) != 2 or flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
        for fd in fds:
            os.close(fd)
        if flags & socket.MSG_CTRUNC:  # more than 3 sent, or no room for them here
            raise ValueError(
                "its descriptors were cut off (too many, or the daemon is at its limit "
                f"of {_descriptor_limit()} open files)"
            )
        raise ValueError(f"expected the editor's stdin and stdout, got {len(fds)} descriptors")
    try:
        hello = json.loads(data)
        if not isinstance(hello, dict):
            raise ValueError("the hello is not an object")
    except ValueError:
        for fd in fds:
            os.close(fd)
        raise
    return hello, fds


def _editor_process(hello: dict[str, Any]) -> EditorProcess | None:
    """The environment and umask of the editor's agentd, from its hello (None when it
    says neither: a peer other than the forwarder, served with the daemon's own)."""
    env, umask = hello.get("env"), hello.get("umask")
    if env is None and umask is None:
        return None
    if not (
        isinstance(env, dict) and all(isinstance(v, str) for v in env.values())
    ):  # (JSON object keys are strings)
        raise ValueError("its environment is not an object of strings")
    if not (isinstance(umask, int) and not isinstance(umask, bool) and 0 <= umask <= 0o777):
        raise ValueError("its umask is not a number from 0 to 0o777")
    return EditorProcess(environment=env, umask=umask)


def _refuse(sock: socket.socket, why: str) -> None:
    """Tell a forwarder its editor is not taken (it then serves it itself), and why."""
    logger.warning("refused an editor: %s", why)
    _tell(sock, {"refused": why})


def _tell(sock: socket.socket, message: dict[str, Any]) -> None:
    """One message to a forwarder, whole or not at all, never waiting (a forwarder that
    does not read loses log lines, never stalls the daemon)."""
    data = json.dumps(message).encode("utf-8", "replace")
    with contextlib.suppress(OSError):
        sock.send(data[: shared_socket.MESSAGE_MAX], socket.MSG_DONTWAIT)


class EditorLogs(logging.Handler):
    """What the daemon logs (at its level, redacted as in its log file) also goes to the
    stderr of each attached editor, through its forwarder: as an unshared agentd logs to
    the editor's stderr. Records come from any thread; each line is one message."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self._forwarders: set[socket.socket] = set()
        self._guard = threading.Lock()

    def attach(self, sock: socket.socket, problems: tuple[str, ...]) -> None:
        """`problems`: the configuration's, logged at start-up, before this editor came."""
        for problem in problems:
            record = logging.makeLogRecord(
                {
                    "name": "agentd.config",
                    "levelno": logging.WARNING,
                    "levelname": "WARNING",
                    "msg": "configuration: %s",
                    "args": (problem,),
                }
            )
            _tell(sock, {"log": self.format(record)})
        with self._guard:
            self._forwarders.add(sock)

    def detach(self, sock: socket.socket) -> None:
        with self._guard:
            self._forwarders.discard(sock)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            forwarders = list(self._forwarders)
        for sock in forwarders:
            _tell(sock, {"log": line})


def _kept() -> int:
    return max(DESCRIPTORS_KEPT, _descriptor_limit() // 8)


def _descriptors_left() -> int | None:
    """How many more files this process may open; None where that cannot be known."""
    try:
        used = len(os.listdir("/proc/self/fd")) - 1  # (less the listing's own)
    except OSError:
        return None
    limit = _descriptor_limit()
    return None if limit == resource.RLIM_INFINITY else limit - used


def _spare_descriptor() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _descriptor_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _still_ours(path: str, ours: os.stat_result) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino)


def serve_native(config: Config) -> int:
    """Unshared: serve the editor on stdin/stdout until `exit` or end of input."""
    return asyncio.run(Daemon(config).serve_alone(fileno(sys.stdin), fileno(sys.stdout)))


def serve_daemon(config: Config, listener: socket.socket, path: str, *, editor_logs: bool) -> int:
    """Shared: serve the connections `listener` accepts (see the module's docstring);
    `editor_logs`: what it logs goes to each editor's stderr too."""
    return asyncio.run(Daemon(config).serve_shared(listener, path, editor_logs=editor_logs))
