"""What `agentd` (no subcommand) is when shared: a forwarder to the user's daemon.

It imports the standard library only. It finds the daemon of its identity
(`agentd.shared_socket`), starting it when none answers (detached; the lock file makes
two forwarders starting at once start one daemon), and hands the daemon its stdin and
stdout (SCM_RIGHTS) with a hello saying its pid, working directory, environment and
umask, and keeps its own copies until the daemon answers `{"ready": true}`; it then
says GO (it let go of them) and the daemon starts serving them. From then on the
daemon reads and writes the editor's pipes itself: no byte passes through the
forwarder, which writes what the daemon logs to its stderr (as an unshared agentd logs
to the editor's stderr) and exits with the code the daemon sends when the connection
ends.

- The daemon refuses the editor (`{"refused": why}`: out of file descriptors, say): the
  forwarder serves it unshared, and says why on stderr.
- The daemon ends before answering (it was exiting, idle, as the forwarder connected):
  it had not touched the pipes; the forwarder connects again, or starts a new one.
- The daemon does not answer within ATTACH_TIMEOUT_S (stopped, hung): the forwarder
  closes the connection (the daemon, finding no GO, never touches the pipes) and serves
  the editor unshared.
- The daemon dies: the forwarder exits with code 1 (and says so on stderr); the
  editor's next spawn starts a fresh daemon.
- The forwarder dies (kill -9, the editor reloading): the daemon sees its socket close
  and ends the connection (its runs go on, or are aborted: `on_disconnect`).
- Nothing can be shared (no Unix sockets, stdin or stdout a terminal or closed, a
  directory or socket that is not the user's alone, a daemon that fails to start):
  `attach` raises Unshared with the reason, and agentd serves the editor itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import sys
import time
from collections.abc import Mapping, Sequence

from agentd import shared_socket

# A daemon that has not said it listens within this is given up (agentd runs unshared).
START_TIMEOUT_S = 30.0
# A daemon that ends before taking the editor's pipes was exiting (idle) as this
# forwarder connected: it connects again, to it or to a new one, this many times in all.
ATTACH_ATTEMPTS = 3
# A daemon that has not answered the hello within this is given up (agentd runs
# unshared). A daemon just started answers once it has loaded: seconds on a busy machine.
ATTACH_TIMEOUT_S = 20.0


class Unshared(Exception):
    """Why this editor cannot use a shared daemon. `expected`: nothing is wrong (a
    terminal, a platform without the means), so nothing is said unless asked (-v)."""

    def __init__(self, why: str, *, expected: bool = False) -> None:
        super().__init__(why)
        self.expected = expected


def shared_by_config(text: bytes, env: Mapping[str, str]) -> bool:
    """`[daemon] shared` in the configuration `text` (default true), unless
    $AGENTD_SHARED says 0 or 1."""
    if env.get("AGENTD_SHARED") in ("0", "1"):
        return env["AGENTD_SHARED"] == "1"
    if b"shared" not in text:  # (tomllib costs a few ms: most files never say it)
        return True
    import tomllib

    try:
        table = tomllib.loads(text.decode("utf-8")).get("daemon")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return True  # the daemon reports the file's problems
    return not (isinstance(table, dict) and table.get("shared") is False)


def attach(options: Sequence[str], config_option: str | None, verbose: bool) -> int | None:
    """Serve the editor through the user's daemon; its exit code, or None when sharing is
    turned off. Raises Unshared. `options`: the daemon's, paths made absolute."""
    env = shared_socket.absolute_paths(os.environ)
    config_file = shared_socket.config_path(config_option, env)
    config_bytes = shared_socket.read_config(config_file)
    if not shared_by_config(config_bytes, env):
        return None
    if not shared_socket.supported():
        raise Unshared("this platform has no Unix sockets that pass descriptors", expected=True)
    for fd, name in ((0, "stdin"), (1, "stdout")):
        try:
            if os.isatty(fd):
                raise Unshared(f"{name} is a terminal", expected=True)
            os.fstat(fd)
        except OSError:
            raise Unshared(f"{name} is closed", expected=True) from None
    directory = shared_socket.runtime_dir(env)
    problem = shared_socket.private_dir_problem(directory)
    if problem:
        raise Unshared(problem)
    key = shared_socket.identity(options, config_file, config_bytes, env)
    path = os.path.join(directory, f"{key}.sock")
    if len(path.encode()) > 100:
        raise Unshared(f"the socket path {path} is too long for a Unix socket")
    log_path = os.path.join(directory, f"{key}.log")
    hello = _hello()
    if len(hello) > shared_socket.HELLO_MAX:
        raise Unshared(f"the environment is too large to share ({len(hello)} bytes)")
    for _attempt in range(ATTACH_ATTEMPTS):
        sock = _connect(path) or _start(directory, key, path, options, env)
        if _hand_over(sock, hello, path):
            break
        sock.close()
    else:
        raise Unshared(
            f"the daemon at {path} kept ending before it took the editor (see {log_path})"
        )
    if verbose:
        sys.stderr.write(f"agentd: attached to the shared daemon at {path} (its log: {log_path})\n")
    # The daemon holds the editor's pipes now: ours would keep them open after it closed
    # them (the editor would see no end of output).
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    while True:
        message = _receive(sock)
        if message is None:
            sys.stderr.write("agentd: the shared daemon ended unexpectedly\n")
            return 1
        if isinstance(message.get("exit"), int):
            return int(message["exit"])


def _hello() -> bytes:
    """Who the editor's agentd is: what the processes the daemon starts for its runs
    inherit (environment, umask), and its working directory."""
    umask = os.umask(0o077)  # (read by setting it: this process has no other thread)
    os.umask(umask)
    hello = {"pid": os.getpid(), "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask}
    return json.dumps(hello).encode()


def _hand_over(sock: socket.socket, hello: bytes, path: str) -> bool:
    """Send the hello with the editor's stdin and stdout. True: the daemon serves them
    now; False: it ended first (it was exiting: try again). Raises Unshared when it
    refused them: this process still holds them, and serves the editor itself."""
    if len(hello) > 64 * 1024:  # (a message must fit the socket's send buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * len(hello))
    try:
        socket.send_fds(sock, [hello], [0, 1])
    except (BrokenPipeError, ConnectionResetError):
        pass  # it ended, or refused at once: what it said, if anything, is read below
    except OSError as exc:
        sock.close()
        raise Unshared(f"cannot pass the daemon at {path} the editor's pipes: {exc}") from None
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while True:
        message = _receive(sock, deadline)
        if message is None:
            return False
        if message.get("ready") is True:
            try:
                sock.send(shared_socket.GO)
            except OSError:
                return False  # it ended: it never had them
            return True
        if isinstance(message.get("refused"), str):
            sock.close()
            # (Shown on the editor's stderr: no control characters, a line at most.)
            why = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message["refused"])
            raise Unshared(f"the daemon at {path} refused this editor: {why[:500] or 'no reason'}")


def _receive(sock: socket.socket, deadline: float | None = None) -> dict | None:
    """The daemon's next message (a log line is written to stderr on the way); None at
    the connection's end. Past `deadline` (time.monotonic()), raises Unshared."""
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                sock.close()
                raise Unshared(f"the daemon did not answer within {ATTACH_TIMEOUT_S:.0f} s")
        try:
            data = sock.recv(shared_socket.MESSAGE_MAX)
        except (InterruptedError, ConnectionResetError):
            # (A daemon that closed before reading the hello, refusing it at once, is
            # reported as a reset, once, before what it said.)
            continue
        if not data:
            return None
        try:
            message = json.loads(data)
        except ValueError:
            continue
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("log"), str):
            sys.stderr.write(message["log"] + "\n")
            sys.stderr.flush()
            continue
        return message


def _connect(path: str) -> socket.socket | None:
    """A connection to the daemon at `path`; None when none answers there."""
    problem = shared_socket.socket_file_problem(path)
    if problem:
        raise Unshared(problem)
    sock = shared_socket.new_socket()
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None  # none, or a dead daemon's socket file
    except OSError as exc:
        sock.close()
        raise Unshared(f"cannot connect to {path}: {exc.strerror or exc}") from None
    if shared_socket.peer_uid(sock) != os.getuid():
        sock.close()
        raise Unshared(f"the process listening at {path} is not this user's: refused")
    return sock


def _start(
    directory: str, key: str, path: str, options: Sequence[str], env: Mapping[str, str]
) -> socket.socket:
    """Start the daemon (one, whoever else is starting it) and connect to it."""
    lock_path = os.path.join(directory, f"{key}.lock")
    try:
        lock = shared_socket.open_private_file(lock_path, os.O_RDWR)
    except OSError as exc:
        raise Unshared(f"cannot use the lock file {lock_path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = _connect(path)  # another forwarder started it while this one waited
        if sock is not None:
            return sock
        _spawn_daemon(directory, key, path, options, env)
        sock = _connect(path)
        if sock is None:
            raise Unshared(f"the daemon started but does not answer at {path}")
        return sock
    finally:
        os.close(lock)  # (releases the lock)


def _spawn_daemon(
    directory: str, key: str, path: str, options: Sequence[str], env: Mapping[str, str]
) -> None:
    import subprocess

    log_path = os.path.join(directory, f"{key}.log")
    try:
        log = shared_socket.open_private_file(log_path, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        raise Unshared(f"cannot use the daemon's log {log_path}: {exc.strerror or exc}") from None
    read_end, write_end = os.pipe()
    # The daemon runs the code this forwarder runs, whatever the working directory holds.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentd",
                *options,
                "daemon",
                "--socket",
                path,
                "--ready-fd",
                str(write_end),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            pass_fds=(write_end,),
            start_new_session=True,
            cwd=root,
            env=dict(env),
        )
    except OSError as exc:
        raise Unshared(f"cannot start the daemon: {exc}") from None
    finally:
        os.close(write_end)
        os.close(log)
    ready = b""
    try:
        while True:
            readable, _, _ = select.select([read_end], [], [], START_TIMEOUT_S)
            if not readable:
                raise Unshared(f"the daemon did not start within {START_TIMEOUT_S:.0f} s")
            data = os.read(read_end, 4096)
            if not data:
                break
            ready += data
    finally:
        os.close(read_end)
    if ready.strip() != b"ready":
        why = ready.decode("utf-8", "replace").strip() or f"it exited (see {log_path})"
        raise Unshared(f"the daemon did not start: {why}")
