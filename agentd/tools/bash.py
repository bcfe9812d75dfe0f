"""The bash tool: one command in its own process group, with a timeout, cancellable.

The command runs as `/bin/bash -c` in a new session, so it and everything it starts share
one process group that can be signalled at once. When bash exits, on timeout and on
cancellation the whole group gets SIGTERM, then SIGKILL after a short grace; background
jobs do not outlive the call (a process that starts its own session escapes this).

Output (stdout and stderr combined) goes through a pipe this module owns rather than
asyncio's PIPE: with asyncio's pipes `Process.wait()` only returns once every writer has
closed them, so one background job holding stdout would block a finished command until
its timeout.

With `ToolEnv.sandbox` set, the command starts inside the sandbox (`agentd.sandbox`): the
same process group holds the sandbox's own processes, and its PID namespace ends every
process of the command, `setsid` ones included, when bash exits or the group is killed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentd import file_modes
from agentd.redaction import holds_secret, is_secret_name
from agentd.sandbox import Confinement, Launch
from agentd.tools.spec import EditorTerminal, ToolEnv, ToolError, ToolOutput
from agentd.tools.truncation import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_LINES,
    abridge,
    open_spill_file,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 120_000
MAX_TIMEOUT_MS = 600_000
KILL_GRACE_S = 1.0
# Output beyond this is streamed to the spill file; only a head and a tail stay in memory.
MEMORY_CAP_BYTES = 4 * 1024 * 1024
# A command that never stops printing must not fill the disk before its timeout.
SPILL_CAP_BYTES = 256 * 1024 * 1024
KEEP_HEAD_BYTES = 64 * 1024
KEEP_TAIL_BYTES = 64 * 1024
# After the group is gone, how long to keep reading from a pipe that a process outside the
# group (one that called setsid) may still hold open.
DRAIN_S = 2.0
_READ_CHUNK = 64 * 1024


def command_title(command: str) -> str:
    return " ".join(command.split())[:60]


# Names that say a variable holds a credential or a way to one: codex's default excludes
# (*KEY*, *SECRET*, *TOKEN*) and more. Withholding a harmless variable (KEYTIMEOUT) costs
# little; passing a credential to a command the model wrote costs a lot.
_CREDENTIAL_NAME = re.compile(
    r"KEY|SECRET|TOKEN|PASSW|PASSPHRASE|CREDENTIAL|AUTH|COOKIE|PRIVATE|(?:^|_)PATS?(?:_|$)",
    re.IGNORECASE,
)
# A URL with a password in it (postgres://user:pass@host/db).
_URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s@:]*:[^/\s@]+@")


def withheld(name: str, value: str) -> bool:
    """A variable of agentd's environment that commands it starts for the model never
    see: named like a credential, holding a URL with a password, or holding a value
    agentd knows as a secret (a provider key, a `${VAR}` used in an MCP header)."""
    return (
        is_secret_name(name)
        or _CREDENTIAL_NAME.search(name) is not None
        or _URL_CREDENTIALS.search(value) is not None
        or holds_secret(value)
    )


def process_environment(
    extra: Mapping[str, str],
    drop: frozenset[str] = frozenset(),
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`base` (os.environ when None) without credentials (`withheld`, and the variables
    named in `drop`), plus `extra`."""
    env = {
        name: value
        for name, value in (os.environ if base is None else base).items()
        if name not in drop and not withheld(name, value)
    }
    env.update(extra)
    return env


async def bash(args: dict[str, Any], env: ToolEnv, call_id: str) -> ToolOutput:
    command: str = args["command"]
    timeout_ms: int = args.get("timeoutMs", DEFAULT_TIMEOUT_MS)
    if not command.strip():
        raise ToolError('Parameter "command" must not be empty.')
    if "\0" in command:
        raise ToolError('Parameter "command" contains a NUL byte.')
    if not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
        raise ToolError(f"timeoutMs must be between 1 and {MAX_TIMEOUT_MS} (10 minutes).")
    cwd = Path(env.workspace_root)
    if not await asyncio.to_thread(os.path.isdir, cwd):
        raise ToolError(f"The workspace root {cwd} does not exist or is not a directory.")
    if env.editor_terminal is not None:
        return await _in_editor_terminal(
            env.editor_terminal, command, timeout_ms, cwd, env, call_id
        )

    argv = ["/bin/bash", "-c", command]
    proc_env = process_environment(env.process_env, env.drop_env, env.environment)
    if env.sandbox is None:
        launch = Launch(argv=argv, env=proc_env)
    else:
        launch = await _confined_launch(env.sandbox, argv, proc_env)
    try:
        return await _run(launch, command, timeout_ms, cwd, env, call_id)
    finally:
        if launch.cleanup_dir is None:
            launch.close()  # descriptors only: no need for a worker thread
        else:
            await asyncio.to_thread(launch.close)


async def _in_editor_terminal(
    terminal: EditorTerminal, command: str, timeout_ms: int, cwd: Path, env: ToolEnv, call_id: str
) -> ToolOutput:
    """The command in the editor's terminal: only agentd's own variables are passed
    (the editor's terminal has the editor's environment, never agentd's)."""
    ran = await terminal.run(command, str(cwd), dict(env.process_env), timeout_ms / 1000, call_id)
    notes: list[str] = []
    if ran.truncated:
        notes.append("[the editor kept only the end of the output]")
    if ran.timed_out:
        notes.append(f"[command timed out after {timeout_ms} ms; the editor killed it]")
    elif ran.signal:
        notes.append(f"[ended by {ran.signal}]")
    elif ran.exit_code:
        notes.append(f"[exit code {ran.exit_code}]")
    body = ran.output.rstrip("\n")
    output = "\n".join(p for p in (body, *notes) if p) or "(no output)"
    return ToolOutput(
        output=output,
        title=command_title(command),
        metadata={
            "exitCode": ran.exit_code,
            "timedOut": ran.timed_out,
            "terminalId": ran.terminal_id,
        },
        is_error=ran.timed_out,
    )


async def _confined_launch(
    sandbox: Confinement, argv: list[str], proc_env: dict[str, str]
) -> Launch:
    """The sandbox's launch, prepared in a worker thread (it stats paths). A cancellation
    during it still closes the descriptors the launch opened."""
    task = asyncio.ensure_future(asyncio.to_thread(sandbox.launch, argv, proc_env))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_discard_launch)
        raise


def _discard_launch(task: asyncio.Future[Launch]) -> None:
    if not task.cancelled() and task.exception() is None:
        launch = task.result()
        launch.close_child_ends()
        launch.close()


async def _run(
    launch: Launch, command: str, timeout_ms: int, cwd: Path, env: ToolEnv, call_id: str
) -> ToolOutput:
    collector = OutputCollector(env, call_id)
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *launch.argv,
            start_new_session=True,
            # The user's umask, not agentd's own (077): what the command makes is theirs.
            umask=file_modes.user_umask() if env.umask is None else env.umask,
            cwd=cwd,
            env=launch.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=asyncio.subprocess.STDOUT,
            pass_fds=launch.pass_fds,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
        launch.close_child_ends()
    # From here on the group must be killed whatever happens, cancellation included.
    try:
        pipe = await _open_reader(read_fd)
    except BaseException:
        await terminate_group(proc)
        raise
    transport, reader = pipe
    pump = asyncio.create_task(collector.pump(reader))
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                await proc.wait()
                sandbox_gone = await _sandbox_gone(launch)
        except TimeoutError:
            timed_out = True
            sandbox_gone = False
        if sandbox_gone and not timed_out:
            # bwrap and its PID namespace are gone, and with them every process of the
            # group: no need to look for survivors.
            await _reap(proc)
        else:
            await terminate_group(proc)
        held_open = not await _drain(pump)
    except BaseException:
        # Cancelled (or failed): the group dies before the cancellation goes on.
        pump.cancel()
        transport.close()
        await terminate_group(proc)
        await collector.close()
        raise
    finally:
        transport.close()
    await collector.close()

    exit_code = proc.returncode
    body = await asyncio.to_thread(collector.text)
    sandbox = env.sandbox
    if sandbox is not None and not timed_out and launch.setup_failure(exit_code):
        return ToolOutput(
            output=f"The sandbox ({sandbox.mechanism.name}) could not start the command: "
            + (body.strip() or f"exit code {exit_code}"),
            title=command_title(command),
            metadata={"exitCode": exit_code, "timedOut": False},
            is_error=True,
            sandbox_blocked="starting the sandbox",
        )
    notes: list[str] = []
    blocked = None
    if held_open:
        notes.append(
            "[stopped reading output: a process that left the command's process group still "
            "holds it open]"
        )
    if timed_out:
        notes.append(f"[command timed out after {timeout_ms} ms; its processes were killed]")
    elif exit_code:
        if exit_code < 0:
            reason = _signal_name(-exit_code)
        else:
            # The sandbox reports a command killed by a signal as 128 + its number, as
            # shells do.
            reason = _signal_name(exit_code - 128) if sandbox and exit_code > 128 else None
        notes.append(f"[exit code {exit_code}{f' ({reason})' if reason else ''}]")
        blocked = sandbox.blocked_by(body) if sandbox is not None else None
        if sandbox is not None and blocked is not None:
            notes.append(
                f"[blocked by the sandbox: {blocked}. {sandbox.rules()} Work within these "
                "limits, or tell the user that the command needs more access.]"
            )
    if not body and not notes:
        body = "(no output)"
    output = "\n".join([part for part in (body.rstrip("\n"), *notes) if part])
    metadata: dict[str, Any] = {"exitCode": exit_code, "timedOut": timed_out}
    if collector.spill_file is not None:
        metadata["outputPath"] = str(collector.spill_file)
    return ToolOutput(
        output=output,
        title=command_title(command),
        metadata=metadata,
        is_error=timed_out,
        sandbox_blocked=blocked,
    )


async def _sandbox_gone(launch: Launch) -> bool:
    """After bwrap has exited: wait for the sandbox's PID 1, which follows it a moment
    later; once PID 1 has exited, the kernel has killed every process of the namespace.
    True when it has (then nothing of the command is left); False without a sandbox or
    a pidfd, or when it takes longer than KILL_GRACE_S (terminate_group then looks).
    A pidfd avoids polling the process group for those few milliseconds."""
    pid = launch.inner_pid() if launch.status_fd is not None else None
    if pid is None:
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (OSError, AttributeError):
        return False
    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        async with asyncio.timeout(KILL_GRACE_S):
            await exited
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def _open_reader(read_fd: int) -> tuple[asyncio.ReadTransport, asyncio.StreamReader]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_READ_CHUNK)
    pipe = os.fdopen(read_fd, "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except BaseException:
        pipe.close()
        raise
    return transport, reader


async def _drain(pump: asyncio.Task[None]) -> bool:
    """Wait for the output to reach EOF; False if it is still open after DRAIN_S."""
    done, _ = await asyncio.wait({pump}, timeout=DRAIN_S)
    if pump in done:
        pump.result()
        return True
    pump.cancel()
    return False


def _signal_name(number: int) -> str | None:
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


async def terminate_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, SIGKILL what is left after KILL_GRACE_S, wait until gone.

    Safe to call when the group is already gone. If cancelled while waiting out the grace,
    it still sends SIGKILL before letting the cancellation through.
    """
    pgid = proc.pid  # start_new_session makes bash the leader of a group with its pid
    if await asyncio.to_thread(group_alive, pgid):
        _signal_group(pgid, signal.SIGTERM)
        gone = False
        try:
            gone = await asyncio.to_thread(wait_group_gone, pgid, KILL_GRACE_S)
        finally:
            if not gone:
                _signal_group(pgid, signal.SIGKILL)
        # SIGKILL is delivered asynchronously; return only once nothing in the group runs.
        if not gone and not await asyncio.to_thread(wait_group_gone, pgid, 2.0):
            log.warning("process group %d survived SIGKILL", pgid)
    await _reap(proc)


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Poll (in a worker thread) until no process in the group runs; False on timeout.

    Nothing signals "this process group is empty", so this polls.
    """
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            await asyncio.wait_for(proc.wait(), timeout=2.0)
        except TimeoutError:
            log.warning("bash (pid %d) was not reaped", proc.pid)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def group_alive(pgid: int) -> bool:
    """True while a process in the group still runs.

    A zombie still counts for killpg(pgid, 0), and an orphaned grandchild stays a zombie
    for as long as whatever inherited it (often PID 1 in a container) fails to reap it, so
    where /proc is available its members are checked for being anything but a zombie.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    members = _group_members_running(pgid)
    return True if members is None else members


def _group_members_running(pgid: int) -> bool | None:
    """Whether /proc shows a non-zombie process in group `pgid`; None without /proc."""
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat_line = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
        fields = stat_line[stat_line.rfind(b")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


class OutputCollector:
    """Combined output: all of it in memory up to a cap, then head + tail + a spill file."""

    def __init__(self, env: ToolEnv, call_id: str) -> None:
        self.env = env
        self.call_id = call_id
        self.buffer = bytearray()
        self.total = 0
        self.spill_fd: int | None = None
        self.spill_file: Path | None = None
        self.spill_error: str | None = None
        self.spilled = 0
        self.head = b""
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_size = 0
        self.overflowed = False

    async def pump(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(_READ_CHUNK):
            await self.add(chunk)

    async def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if not self.overflowed:
            self.buffer += chunk
            if len(self.buffer) <= MEMORY_CAP_BYTES:
                return
            self.overflowed = True
            data = bytes(self.buffer)
            self.head = data[:KEEP_HEAD_BYTES]
            self.buffer = bytearray()
            self._keep_tail(data[-KEEP_TAIL_BYTES:])
            await self._spill(data, first=True)
            return
        self._keep_tail(chunk)
        await self._spill(chunk, first=False)

    def _keep_tail(self, chunk: bytes) -> None:
        self.tail.append(chunk)
        self.tail_size += len(chunk)
        while self.tail and self.tail_size - len(self.tail[0]) >= KEEP_TAIL_BYTES:
            self.tail_size -= len(self.tail.popleft())

    async def _spill(self, data: bytes, *, first: bool) -> None:
        if self.spill_error is not None or self.spilled >= SPILL_CAP_BYTES:
            return
        data = data[: SPILL_CAP_BYTES - self.spilled]
        try:
            if first:
                self.spill_fd, self.spill_file = await asyncio.to_thread(
                    open_spill_file, self.env, self.call_id
                )
            assert self.spill_fd is not None
            await asyncio.to_thread(_write_all, self.spill_fd, data)
            self.spilled += len(data)
        except OSError as exc:
            self.spill_error = exc.strerror or str(exc)

    async def close(self) -> None:
        if self.spill_fd is not None:
            fd, self.spill_fd = self.spill_fd, None
            await asyncio.to_thread(os.close, fd)

    def text(self) -> str:
        """The output for the model; abridged, with a note, when it was spilled."""
        if not self.overflowed:
            return bytes(self.buffer).decode("utf-8", "replace")
        tail = b"".join(self.tail)[-KEEP_TAIL_BYTES:]
        joined = self.head.decode("utf-8", "replace") + "\n" + tail.decode("utf-8", "replace")
        if self.spill_error is not None:
            where = f"the full output could not be saved ({self.spill_error})"
        elif self.spilled < self.total:
            where = f"the first {self.spilled} bytes are saved to {self.spill_file}"
        else:
            where = f"full output saved to {self.spill_file}"
        # Room is left for the exit-code and timeout notes, so the run loop's own
        # truncation (which would overwrite the spill file) does not cut this again.
        return abridge(
            joined,
            total_bytes=self.total,
            where=where,
            max_bytes=DEFAULT_MAX_BYTES - 1000,
            max_lines=DEFAULT_MAX_LINES - 5,
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
