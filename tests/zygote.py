"""A fork server for the tests: imports agentd once, then forks a daemon per request.

Starting `python -m agentd` costs about half a second of CPU, nearly all of it imports
(pygls's lsprotocol types alone are ~1,000 attrs classes). The suite starts hundreds of
daemons on two cores, so that cost was most of `make test`. A daemon forked from here
is the same program: the same modules (only those `agentd` imports before it reads
input), then `agentd.cli.main(args)` with the request's stdin, stdout and stderr,
environment and working directory, in a process of its own; its exit status is
reported back. `AGENTD_TEST_SPAWN=exec` runs the suite with real `python -m agentd`
processes instead, and tests that need an exec'd process (a `preexec_fn`, a wrapper
command) get one anyway.

Protocol, over a Unix socket, one connection per daemon: the client sends one JSON line
`{"args", "env", "cwd"}` with three descriptors (stdin, stdout, stderr) attached
(SCM_RIGHTS); the server answers `pid <n>\\n`, and `exit <returncode>\\n` when that
process has ended (a negative returncode: killed by that signal, as subprocess says).

Run as `python tests/zygote.py SOCKET` from the directory whose `agentd` the daemons
should be (as `python -m agentd` would import it). It ends when its stdin closes.
"""

from __future__ import annotations

import array
import json
import os
import selectors
import signal
import socket
import sys
import threading


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    fds = array.array("i")
    data = b""
    while not data.endswith(b"\n"):
        msg, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * fds.itemsize))
        if not msg:
            raise EOFError
        data += msg
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return json.loads(data), list(fds)


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def serve(path: str) -> tuple[list[str], int] | None:
    """The server loop. Returns (args, listening fd) in a forked child, which then runs
    agentd; never returns in the server itself (it exits when its stdin closes)."""
    # The client waits for `path` to exist, then connects: the socket must be listening
    # by then (a bound one that is not yet refuses), so it is bound under another name
    # and renamed into place.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".new")
    listener.listen(64)
    os.rename(path + ".new", path)
    # SIGCHLD wakes the loop through this pair, so exits are reported at once.
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    selector.register(sys.stdin, selectors.EVENT_READ, "stdin")
    children: dict[int, socket.socket] = {}
    while True:
        for key, _ in selector.select(timeout=1.0):
            if key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    os._exit(0)
            elif key.data == "wake":
                try:
                    while wake_r.recv(512):
                        pass
                except BlockingIOError:
                    pass
            elif key.data == "accept":
                conn, _ = listener.accept()
                try:
                    request, fds = _receive(conn)
                except (EOFError, OSError, ValueError):
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    # The daemon: the request's descriptors become 0, 1, 2; nothing of
                    # the server stays open or installed.
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    for target, fd in enumerate(fds):
                        os.dup2(fd, target)
                    keep = {0, 1, 2}
                    for fd in fds:
                        if fd not in keep:
                            os.close(fd)
                    for other in children.values():
                        other.close()
                    selector.close()
                    conn.close()
                    wake_r.close()
                    wake_w.close()
                    listener.close()
                    os.chdir(request["cwd"])
                    os.environ.clear()
                    os.environ.update(request["env"])
                    return request["args"], 0
                for fd in fds:
                    os.close(fd)
                try:
                    conn.sendall(b"pid %d\n" % pid)
                except OSError:
                    pass  # the client is gone; the child is still reaped below
                children[pid] = conn
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(b"exit %d\n" % _returncode(status))
                except OSError:
                    pass
                conn.close()


def main() -> None:
    sys.path.insert(0, os.getcwd())  # as `python -m agentd` run from here would
    # What `agentd` imports before it reads its first frame, and nothing more: a test
    # may check that something is *not* loaded at startup.
    import agentd.cli
    import agentd.server

    if threading.active_count() != 1:
        raise SystemExit("zygote: importing agentd started a thread; forking is unsafe")
    child = serve(sys.argv[1])
    assert child is not None
    args, _ = child
    sys.argv = ["agentd", *args]
    raise SystemExit(agentd.cli.main(args))


if __name__ == "__main__":
    main()
