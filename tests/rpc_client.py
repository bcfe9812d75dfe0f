"""A small JSON-RPC client for the tests: spawns the installed `agentd`, speaks LSP
framing over real pipes, and shares no code with agentd.

A reader thread parses frames into a queue; tests wait on conditions with deadlines
(never sleeps). Requests from agentd (`tool/execute`, `permission/request`) are
answered by handlers the test registers.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

AGENTD = [sys.executable, "-m", "agentd"]
# "fork": daemons are forked from a process that imported agentd once (tests/zygote.py),
# which saves half a second of CPU per daemon; "exec": `python -m agentd` each time (what
# the benchmarks use, since they time startup). The test suite sets this from
# $AGENTD_TEST_SPAWN (conftest.py).
SPAWN = "exec"
# Check every message received against protocol/agentd.schema.json (tests/wire_check.py).
# The test suite turns it on (conftest.py); the benchmarks leave it off, as it costs the
# client time per message.
VALIDATE = False
# "1": agentd attaches to a shared daemon (one per test, in the test's runtime dir).
SHARED = "0"


class _Zygote:
    """The fork server of this process (started on first use, ended with it)."""

    _instance: _Zygote | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        import atexit
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="agentd-zygote-")
        self.path = os.path.join(self.dir, "sock")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("zygote.py")), self.path],
            stdin=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the test zygote did not start")
            time.sleep(0.01)
        atexit.register(self.close)

    @classmethod
    def get(cls, replacing: _Zygote | None = None) -> _Zygote:
        with cls._guard:
            if cls._instance is None or cls._instance is replacing:
                cls._instance = cls()
            elif (code := cls._instance.proc.poll()) is not None:
                print(
                    f"rpc_client: the test zygote had ended ({code}); starting another",
                    file=sys.stderr,
                )
                cls._instance = cls()
            return cls._instance

    @classmethod
    def fork(cls, args: list[str], env: dict[str, str], cwd: str | None) -> ForkedProcess:
        """A daemon forked by this process's zygote. A zygote found gone at connect
        (killed, or ending as it was looked up) is replaced once, and said so."""
        zygote = cls.get()
        try:
            return zygote.spawn(args, env, cwd)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            try:
                code: int | str | None = zygote.proc.wait(5)
            except subprocess.TimeoutExpired:
                code = "still running"
            print(
                f"rpc_client: the test zygote refused a connection ({exc}; its exit "
                f"status: {code}); starting another",
                file=sys.stderr,
            )
            zygote.proc.kill()
            return cls.get(replacing=zygote).spawn(args, env, cwd)

    def close(self) -> None:
        import shutil

        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()  # the zygote ends at end of input
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def spawn(self, args: list[str], env: dict[str, str], cwd: str | None) -> ForkedProcess:
        return ForkedProcess(self.path, args, env, cwd or os.getcwd())


class ForkedProcess:
    """The part of `subprocess.Popen` the tests use, for a daemon forked by the zygote
    (not this process's child: its exit status comes from the zygote)."""

    def __init__(self, path: str, args: list[str], env: dict[str, str], cwd: str) -> None:
        import socket

        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        for fd in (stdin_w, stdout_r, stderr_r):
            os.set_inheritable(fd, False)
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect(path)
        request = json.dumps({"args": args, "env": env, "cwd": cwd}).encode() + b"\n"
        self._conn.sendmsg(
            [request],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(_fd_array(stdin_r, stdout_w, stderr_w)))],
        )
        for fd in (stdin_r, stdout_w, stderr_w):
            os.close(fd)
        self.stdin = os.fdopen(stdin_w, "wb")
        self.stdout = os.fdopen(stdout_r, "rb")
        self.stderr = os.fdopen(stderr_r, "rb")
        self._buffer = b""
        self.returncode: int | None = None
        first = self._line(timeout=30)
        if first is None or not first.startswith("pid "):
            raise RuntimeError(f"the test zygote did not fork a daemon: {first!r}")
        self.pid = int(first.split()[1])

    def _line(self, timeout: float | None) -> str | None:
        import select

        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._conn], [], [], remaining)
            if not ready:
                return None
            chunk = self._conn.recv(4096)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def poll(self) -> int | None:
        if self.returncode is None:
            line = self._line(timeout=0)
            if line is not None and line.startswith("exit "):
                self.returncode = int(line.split()[1])
                self._conn.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            line = self._line(timeout)
            if line is None:
                raise subprocess.TimeoutExpired("agentd", timeout or 0)
            self.returncode = int(line.split()[1])
            self._conn.close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _hashable(msg_id: Any) -> Any:
    return msg_id if isinstance(msg_id, str | int | float | bool | None) else json.dumps(msg_id)


def _fd_array(*fds: int) -> Any:
    import array

    return array.array("i", fds)


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.message = error.get("message")
        self.data = error.get("data")


def frame(obj: Any) -> bytes:
    body = json.dumps(obj).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class Daemon:
    def __init__(
        self,
        env: dict[str, str],
        args: list[str] | None = None,
        cwd: str | None = None,
        preexec_fn: Callable[[], None] | None = None,
        wrapper: list[str] | None = None,
        spawn: str | None = None,
        validate: bool | None = None,
    ) -> None:
        """`wrapper` is a command that runs agentd (`[*wrapper, python, -m, agentd]`).
        `spawn` "exec" forces a real `python -m agentd` process (what the kernel shows
        of it: its /proc environ and cmdline), whatever SPAWN says."""
        full_env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | ForkedProcess
        if (spawn or SPAWN) == "fork" and preexec_fn is None and wrapper is None:
            self.proc = _Zygote.fork(list(args or []), full_env, cwd)
        else:
            self.proc = subprocess.Popen(
                [*(wrapper or []), *AGENTD, *(args or [])],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=full_env,
                cwd=cwd,
                preexec_fn=preexec_fn,
            )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self.messages: list[dict[str, Any]] = []  # everything received, in order
        self.responses: dict[Any, dict[str, Any]] = {}
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self.stderr_lines: list[str] = []
        self.closed = False
        self._check: Callable[[Any, list[str] | None], str | None] | None = None
        if VALIDATE if validate is None else validate:
            from wire_check import check_message

            self._check = check_message
        # The methods of the requests sent through `send`, by id (a test may reuse one).
        self._sent: dict[Any, list[str]] = {}
        # Messages from agentd that break the schema (see wire_check.py).
        self.wire_errors: list[str] = []
        # Cleared by stop_reading: the reader thread takes no new frame from stdout.
        self._reading = threading.Event()
        self._reading.set()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._err.start()

    # --- transport ---------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def _send_quietly(self, obj: Any) -> None:
        """For answers from handler threads: the daemon may be gone by then."""
        try:
            self.send(obj)
        except (ValueError, OSError):
            pass

    def send(self, obj: Any) -> None:
        if isinstance(obj, dict) and isinstance(obj.get("method"), str) and "id" in obj:
            with self._cond:
                self._sent.setdefault(_hashable(obj["id"]), []).append(obj["method"])
        self.send_raw(frame(obj))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode("utf-8", "replace"))

    def _read_loop(self) -> None:
        out = self.proc.stdout
        assert out is not None
        try:
            while True:
                self._reading.wait()
                headers: dict[str, str] = {}
                while True:
                    line = out.readline()
                    if not line:
                        return
                    line = line.strip()
                    if not line:
                        break
                    name, _, value = line.decode("ascii").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers["content-length"])
                body = out.read(length)
                msg = json.loads(body)
                if self._check is not None:
                    self._validate(msg)
                self._on_message(msg)
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def _validate(self, msg: Any) -> None:
        assert self._check is not None
        sent = None
        if isinstance(msg, dict) and "method" not in msg and "id" in msg:
            with self._cond:
                sent = self._sent.get(_hashable(msg["id"]))
        problem = self._check(msg, sent)
        if problem is not None:
            with self._cond:
                self.wire_errors.append(problem)
                self._cond.notify_all()

    def assert_wire_valid(self) -> None:
        """Fail when agentd sent a message its schema does not describe."""
        with self._cond:
            errors = list(self.wire_errors)
        if errors:
            shown = "\n".join(errors[:5])
            more = f"\n(and {len(errors) - 5} more)" if len(errors) > 5 else ""
            raise AssertionError(f"agentd sent messages that break its schema:\n{shown}{more}")

    def _on_message(self, msg: dict[str, Any]) -> None:
        if "method" in msg and "id" in msg:
            handler = self.handlers.get(msg["method"])
            with self._cond:
                self.messages.append(msg)
                self._cond.notify_all()
            if handler is not None:
                threading.Thread(target=self._answer, args=(msg, handler), daemon=True).start()
            return
        with self._cond:
            self.messages.append(msg)
            if "id" in msg and "method" not in msg:
                self.responses[msg["id"]] = msg
            self._cond.notify_all()

    def _answer(self, msg: dict[str, Any], handler: Callable[[dict[str, Any]], Any]) -> None:
        try:
            result = handler(msg["params"])
            self._send_quietly({"jsonrpc": "2.0", "id": msg["id"], "result": result})
        except RpcError as exc:
            self._send_quietly(
                {
                    "jsonrpc": "2.0",
                    "id": msg["id"],
                    "error": {"code": exc.code, "message": exc.message},
                }
            )

    def stop_reading(self) -> None:
        """Act as an editor that stops reading agentd's stdout (a frame the reader thread
        is already waiting for is still taken)."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    @property
    def reading(self) -> bool:
        return self._reading.is_set()

    # --- waiting -----------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self.wire_errors:
                    self.assert_wire_valid()
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        "condition not met; stderr:\n" + "".join(self.stderr_lines[-30:])
                    )
                if self.closed and not value:
                    # One last check after the stream closed.
                    value = predicate()
                    if value:
                        return value
                    raise EOFError(
                        "agentd closed stdout; stderr:\n" + "".join(self.stderr_lines[-30:])
                    )
                self._cond.wait(min(remaining, 0.5))

    def notifications(self, method: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [
                m
                for m in self.messages
                if "id" not in m and (method is None or m.get("method") == method)
            ]

    # --- requests ----------------------------------------------------------------------

    def request_async(self, method: str, params: Any = None, *, msg_id: Any = None) -> Any:
        msg_id = next(self._ids) if msg_id is None else msg_id
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return msg_id

    def response(self, msg_id: Any, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait_for(lambda: self.responses.get(msg_id), timeout)

    def result(self, msg_id: Any, timeout: float = 20.0) -> Any:
        resp = self.response(msg_id, timeout)
        if "error" in resp:
            raise RpcError(resp["error"])
        return resp["result"]

    def call(self, method: str, params: Any = None, timeout: float = 20.0) -> Any:
        return self.result(self.request_async(method, params), timeout)

    def notify(self, method: str, params: Any = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)

    def initialize(self, **params: Any) -> Any:
        result = self.call(
            "initialize", {"processId": os.getpid(), "clientInfo": {"name": "tests"}, **params}
        )
        self.notify("initialized", {})
        return result

    # --- ending ------------------------------------------------------------------------

    def close_stdin(self) -> None:
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.end()
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
        # The readers reach the end of stdout and stderr on their own time after the
        # process exited: what a test reads after stop() (stderr_lines) is all there was.
        for reader in (self._reader, self._err):
            if reader.is_alive() and reader is not threading.current_thread():
                reader.join(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        self.assert_wire_valid()

    def end(self) -> None:
        """Ask agentd to end, as the protocol says (stop then waits for the exit)."""
        self.call("shutdown", None, timeout=10)
        self.notify("exit")


def runtime_dir(tmp: Path) -> str:
    """A short directory for a test's shared daemons (a Unix socket's path is short)."""
    link = tmp / "run"
    if not link.exists():
        tmp.mkdir(parents=True, exist_ok=True)
        link.symlink_to(tempfile.mkdtemp(prefix="agentd-run-"))
    return os.path.realpath(link)


def daemon_env(tmp: Path, base_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {
        "AGENTD_DATA_DIR": str(tmp / "data"),
        "AGENTD_STATE_DIR": str(tmp / "state"),
        "AGENTD_CONFIG": str(tmp / "no-config.toml"),
        "PYTHONUNBUFFERED": "1",
        # Each test's own shared daemons (AGENTD_TEST_SHARED=1, or a test that asks).
        "AGENTD_SHARED": SHARED,
    }
    for key in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AGENTD_MODEL", "AGENTD_TITLE_MODEL"):
        env[key] = ""
    if base_url:
        env.update(
            {
                "OPENAI_BASE_URL": base_url,
                "OPENAI_API_KEY": "sk-test-key-123456",
                "AGENTD_MODEL": "scripted",
            }
        )
    env.update(extra)
    if env["AGENTD_SHARED"] == "1" and "AGENTD_RUNTIME_DIR" not in extra:
        env["AGENTD_RUNTIME_DIR"] = runtime_dir(tmp)
    return env
