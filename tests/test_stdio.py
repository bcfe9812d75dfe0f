"""agentd on every kind of stdin and stdout an editor, a shell or a supervisor may hand
it: pipes (the rest of the suite), regular files, /dev/null, a closed descriptor, a
terminal (pty), a socket, one socket for both. Each either serves and ends cleanly at
end of input, or (nothing to read) ends at once: never a hang, never a traceback."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rpc_client import daemon_env

AGENTD = [sys.executable, "-m", "agentd"]


def frame(obj: Any) -> bytes:
    body = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def frames(data: bytes) -> list[dict[str, Any]]:
    """Every frame in `data` (agentd writes exactly `Content-Length: n\\r\\n\\r\\n`)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep and head.startswith(b"Content-Length: "), data[:80]
        n = int(head.split(b":")[1])
        out.append(json.loads(rest[:n]))
        data = rest[n:]
    return out


REQUESTS = b"".join(
    frame(m)
    for m in [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
        {"jsonrpc": "2.0", "method": "initialized", "params": {}},
        {"jsonrpc": "2.0", "id": 2, "method": "session/create", "params": {"title": "t"}},
        {"jsonrpc": "2.0", "id": 3, "method": "session/list"},
    ]
)


def answered(messages: list[dict[str, Any]]) -> dict[Any, Any]:
    results = {m["id"]: m for m in messages if "id" in m and "method" not in m}
    assert all("result" in m for m in results.values()), results
    return results


def check_served(messages: list[dict[str, Any]]) -> None:
    results = answered(messages)
    assert set(results) == {1, 2, 3}
    assert results[2]["result"]["session"]["title"] == "t"
    assert "sessions" in results[3]["result"]


_SPAWNED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_daemon_left() -> Iterator[None]:
    """A failing test (agentd hanging) leaves no daemon behind."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def spawn(tmp: Path, stdin: Any, stdout: Any, **kw: Any) -> subprocess.Popen[bytes]:
    with open(tmp / "stderr.log", "wb") as stderr:
        proc = subprocess.Popen(
            AGENTD,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, **daemon_env(tmp)},
            **kw,
        )
    _SPAWNED.append(proc)
    return proc


def ended_cleanly(proc: subprocess.Popen[bytes], tmp: Path) -> None:
    assert proc.wait(timeout=30) == 0
    assert "Traceback" not in (tmp / "stderr.log").read_text()


def stored_sessions(tmp: Path) -> int:
    return len(list((tmp / "data" / "sessions").glob("*/log.jsonl")))


def read_until(fd: int, done: Callable[[bytes], bool], timeout: float = 30) -> bytes:
    """Read from a descriptor (a pty master, a socket) until `done(data)`."""
    data = b""
    deadline = time.monotonic() + timeout
    while not done(data):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"nothing more after {data[-200:]!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty's other side is gone
                break
            if not chunk:
                break
            data += chunk
    return data


def has_answers(*ids: Any) -> Callable[[bytes], bool]:
    def done(data: bytes) -> bool:
        try:
            got = {m.get("id") for m in frames(data)}
        except (AssertionError, ValueError):
            return False  # a frame still arriving
        return set(ids) <= got

    return done


# --- stdin kinds (stdout a pipe) -------------------------------------------------------


def test_stdin_a_regular_file(tmp_path):
    requests = tmp_path / "requests.bin"
    requests.write_bytes(REQUESTS)
    with open(requests, "rb") as stdin:
        proc = spawn(tmp_path, stdin, subprocess.PIPE)
        out, _ = proc.communicate(timeout=30)
    check_served(frames(out))
    ended_cleanly(proc, tmp_path)


def test_stdin_dev_null_ends_at_once(tmp_path):
    with open(os.devnull, "rb") as stdin:
        proc = spawn(tmp_path, stdin, subprocess.PIPE)
        out, _ = proc.communicate(timeout=30)
    assert out == b""
    ended_cleanly(proc, tmp_path)


def test_stdin_closed_ends_at_once(tmp_path):
    proc = spawn(tmp_path, subprocess.DEVNULL, subprocess.PIPE, preexec_fn=lambda: os.close(0))
    out, _ = proc.communicate(timeout=30)
    assert out == b""
    ended_cleanly(proc, tmp_path)


def test_stdin_a_terminal(tmp_path):
    """A pty in raw mode (a terminal in cooked mode would rewrite `\\r\\n`): frames typed
    into it are served; the terminal going away (EIO) is end of input; the terminal is
    left in blocking mode, as the shell that shares it expects."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    proc = spawn(tmp_path, slave, subprocess.PIPE)
    os.write(master, REQUESTS)
    assert proc.stdout is not None
    data = read_until(proc.stdout.fileno(), has_answers(1, 2, 3))
    check_served(frames(data))
    assert not os.get_blocking(slave)  # agentd reads it without blocking...
    os.close(master)
    proc.stdout.read()
    ended_cleanly(proc, tmp_path)
    assert os.get_blocking(slave)  # ...and gave it back as it found it
    os.close(slave)


def test_stdin_a_socket(tmp_path):
    ours, theirs = socket.socketpair()
    proc = spawn(tmp_path, theirs.fileno(), subprocess.PIPE)
    ours.sendall(REQUESTS)
    ours.shutdown(socket.SHUT_WR)  # end of input
    out, _ = proc.communicate(timeout=30)
    ours.close()
    check_served(frames(out))
    ended_cleanly(proc, tmp_path)
    assert os.get_blocking(theirs.fileno())
    theirs.close()


# --- stdout kinds ----------------------------------------------------------------------


def test_stdout_a_regular_file(tmp_path):
    requests = tmp_path / "requests.bin"
    requests.write_bytes(REQUESTS)
    output = tmp_path / "out.bin"
    with open(requests, "rb") as stdin, open(output, "wb") as stdout:
        proc = spawn(tmp_path, stdin, stdout)
        ended_cleanly(proc, tmp_path)
    check_served(frames(output.read_bytes()))


def test_stdout_dev_null(tmp_path):
    with open(os.devnull, "wb") as stdout:
        proc = spawn(tmp_path, subprocess.PIPE, stdout)
    assert proc.stdin is not None
    proc.stdin.write(REQUESTS)
    proc.stdin.write(frame({"jsonrpc": "2.0", "id": 4, "method": "shutdown"}))
    proc.stdin.write(frame({"jsonrpc": "2.0", "method": "exit"}))
    proc.stdin.flush()
    ended_cleanly(proc, tmp_path)
    assert stored_sessions(tmp_path) == 1  # the session/create was served


def test_stdout_a_terminal(tmp_path):
    master, slave = pty.openpty()
    tty.setraw(slave)
    proc = spawn(tmp_path, subprocess.PIPE, slave)
    os.close(slave)
    assert proc.stdin is not None
    proc.stdin.write(REQUESTS)
    proc.stdin.flush()
    data = read_until(master, has_answers(1, 2, 3))
    check_served(frames(data))
    proc.stdin.close()
    read_until(master, lambda _: False)  # drain until the daemon closes the terminal
    os.close(master)
    ended_cleanly(proc, tmp_path)


def test_one_socket_for_stdin_and_stdout(tmp_path):
    """inetd-style: both descriptors are one socket. Data arriving on it must not be
    mistaken for the reader closing stdout."""
    ours, theirs = socket.socketpair()
    with theirs:
        proc = spawn(tmp_path, theirs.fileno(), theirs.fileno())
    ours.sendall(REQUESTS)
    check_served(frames(read_until(ours.fileno(), has_answers(1, 2, 3))))
    ours.sendall(frame({"jsonrpc": "2.0", "id": 9, "method": "models/list"}))
    assert read_until(ours.fileno(), has_answers(9))
    ours.shutdown(socket.SHUT_WR)
    read_until(ours.fileno(), lambda _: False)  # until agentd closes its end
    ours.close()
    ended_cleanly(proc, tmp_path)
