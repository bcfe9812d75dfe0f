"""Run a command as the only child of a subreaper that ends every process it leaves.

    python -I -S subreaper.py PARENT_PID EXECUTABLE ARGV0 [ARG ...]

Linux only. agentd starts each stdio MCP server through this script (by path, with
`-I -S`: no agentd or site-packages imports; about 30 ms to start, 10 MiB RSS of which
4 MiB its own). The script marks
itself a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`), so every process the server
starts, however it detaches (double fork, `setsid`, a new process group), is reparented
here when its parent exits instead of escaping to init. The server inherits stdin, stdout
and stderr; this process keeps none of them open, so the server's pipes end when the
server and its children do.

It ends everything below it:
- when the server exits (its leftover processes get SIGTERM, then SIGKILL);
- on SIGTERM (agentd's stop escalation): the server and every other process below get
  SIGTERM, then SIGKILL;
- when agentd dies, even by SIGKILL: `PR_SET_PDEATHSIG` turns that into a SIGTERM here.

The server runs in a process group of its own, so signals it sends to its group do not
reach this process. Its exit status is the server's (128 + the signal number when a
signal ended it); 127 when the server could not be started. What still escapes: a
process that kills this one first (same user, by pid) leaves its orphans to init.

Stdlib only, and nothing here may import agentd: the script runs outside the package.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
# After SIGTERM, how long processes get to exit before SIGKILL.
TERM_GRACE_S = 1.0
# A fork bomb that outpaces the SIGKILL sweeps is given up on after this long.
KILL_SWEEP_S = 2.0
POLL_S = 0.01


def descendants(root: int) -> list[tuple[int, bool]]:
    """(pid, is_zombie) of every process below `root`, from /proc."""
    children: dict[int, list[tuple[int, bool]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append((int(name), fields[0] in (b"Z", b"X")))
    found: list[tuple[int, bool]] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child[0])
    return found


def reap(server: int, status: list[int]) -> None:
    """Collect every exited child without blocking; the server's status goes to `status`."""
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == server:
            status.append(st)


def end_all(server: int, status: list[int]) -> None:
    """SIGTERM to every process below this one, SIGKILL to those left after the grace,
    and collect them all."""
    me = os.getpid()
    for pid, zombie in descendants(me):
        if not zombie:
            for sig in (signal.SIGTERM, signal.SIGCONT):  # a stopped process acts on TERM
                _signal(pid, sig)
    deadline = time.monotonic() + TERM_GRACE_S
    while time.monotonic() < deadline:
        reap(server, status)
        if not any(not zombie for _, zombie in descendants(me)):
            break
        time.sleep(POLL_S)
    deadline = time.monotonic() + KILL_SWEEP_S
    while time.monotonic() < deadline:
        reap(server, status)
        live = [pid for pid, zombie in descendants(me) if not zombie]
        if not live:
            break
        for pid in live:
            _signal(pid, signal.SIGKILL)
        time.sleep(POLL_S / 10)
    # Every process below is dead; its zombies come here as their parents are reaped.
    deadline = time.monotonic() + 1.0
    while descendants(me) and time.monotonic() < deadline:
        reap(server, status)
        time.sleep(POLL_S / 10)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def exit_code(status: list[int]) -> int:
    if not status:
        return 1
    code = os.waitstatus_to_exitcode(status[0])
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    parent, executable, argv0, args = int(argv[1]), argv[2], argv[3], argv[4:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        os.write(2, f"subreaper: prctl failed: {os.strerror(ctypes.get_errno())}\n".encode())
    # Signals are taken with sigwaitinfo, never by handlers: no race between a SIGTERM
    # and the wait, and one arriving during the sweep just stays pending.
    waited = {signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an editor's Ctrl-C is agentd's to handle
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        return 1  # agentd died before the death signal was armed
    server = os.fork()
    if server == 0:
        try:
            # Python ignores SIGPIPE and SIGXFSZ, and ignored signals and the mask survive
            # exec; the server gets the defaults, as subprocess would give it.
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            # A process group of its own: a server signalling its group (`kill 0`, a
            # shell's job control) must not reach this process.
            os.setpgid(0, 0)
            os.execv(executable, [argv0, *args])
        except OSError as exc:
            os.write(2, f"cannot start {executable}: {exc.strerror}\n".encode())
        finally:
            os._exit(127)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    status: list[int] = []
    while True:
        reap(server, status)
        if status or signal.sigwaitinfo(waited).si_signo != signal.SIGCHLD:
            break
    end_all(server, status)
    return exit_code(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
