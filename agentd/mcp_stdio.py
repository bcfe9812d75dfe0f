"""A stdio MCP server's process and its newline-delimited messages, bounded.

agentd does not use the SDK's stdio transport: it reads a whole line into memory
whatever its size (a 200 MB tool result held 230 MiB and then took seconds to parse)
and ends only the server's own process group. Here:

- a line over `max_message_bytes` is never held: its first and last few KiB are kept
  (enough to find the request it answers) and the rest is read and dropped, at pipe
  speed;
- on Linux the server runs below `agentd/subreaper.py`, which ends every process the
  server starts, however it detaches, when the server exits, when agentd stops it, and
  when agentd dies (even by SIGKILL). Elsewhere the server gets its own session and its
  process group is signalled, as the SDK does.

Bytes only: what the lines mean (JSON-RPC) is mcp_servers' business.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import sys
from pathlib import Path

import attrs

from agentd import file_modes

SUBREAPER = Path(__file__).with_name("subreaper.py")
# The stop escalation: stdin closed, then SIGTERM after STDIN_GRACE_S, then SIGKILL after
# TERM_GRACE_S more. The subreaper's own sweep (subreaper.TERM_GRACE_S, then SIGKILL)
# fits inside TERM_GRACE_S, so the last resort, which would orphan the server's children,
# is only for a subreaper that is itself stuck.
STDIN_GRACE_S = 2.0
TERM_GRACE_S = 2.5
KILL_WAIT_S = 1.0
_EXIT_POLL_S = 0.01
_READ_CHUNK = 256 * 1024
# What is kept of a line too long to hold: enough to find its JSON-RPC id.
KEEP_BYTES = 4096


def subreaper_available() -> bool:
    return sys.platform.startswith("linux")


@attrs.define
class OversizedLine:
    """A line longer than the limit. Reported twice: when it passes the limit
    (`complete` false, only `head` known) and when it ends (`tail` and `size` final)."""

    head: bytes
    size: int
    tail: bytes = b""
    complete: bool = False


class StdioServerProcess:
    """A started server: `read()` its lines, `write()` to it, `stop()` it (and what it
    started)."""

    def __init__(self, proc: asyncio.subprocess.Process, max_message_bytes: int) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._max = max_message_bytes
        self._pending = b""  # the unread rest of the last chunk
        self._over: OversizedLine | None = None  # a line too long, still being dropped
        self._stopped = False

    @classmethod
    async def start(
        cls,
        command: str,
        args: list[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        stderr: int,
        max_message_bytes: int,
    ) -> StdioServerProcess:
        """Start the server. Raises FileNotFoundError for a missing command or cwd (with
        `filename` naming which), like subprocess does."""
        executable = await asyncio.to_thread(_resolve, command, env, cwd)
        if subreaper_available():
            argv = [sys.executable, "-I", "-S", str(SUBREAPER), str(os.getpid())]
            argv += [executable, command, *args]
        else:
            argv = [executable, *args]
        # Forked from the event loop's thread, the main one: the subreaper's
        # PR_SET_PDEATHSIG fires when the thread that forked it ends, not the process.
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=cwd,
            start_new_session=True,
            # The user's umask, not agentd's own (077): what the server writes in the
            # workspace is made as the user would make it.
            umask=file_modes.user_umask(),
            limit=_READ_CHUNK,
        )
        return cls(proc, max_message_bytes)

    # --- messages ----------------------------------------------------------------------

    async def read(self) -> bytes | OversizedLine | None:
        """The next non-blank line (without its newline), an OversizedLine, or None at
        the end of the server's output."""
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await self._chunk()
            if chunk is None:
                return None  # a last line without its newline is incomplete: dropped
            end = chunk.find(b"\n")
            piece = chunk if end < 0 else chunk[:end]
            if end >= 0:
                self._pending = chunk[end + 1 :]
            over = self._over
            if over is not None:
                over.size += len(piece)
                over.tail = (over.tail + piece[-KEEP_BYTES:])[-KEEP_BYTES:]
                if end >= 0:
                    over.complete = True
                    self._over = None
                    return over
                continue
            size += len(piece)
            if size > self._max:
                parts.append(piece)
                over = OversizedLine(
                    head=_first_bytes(parts, KEEP_BYTES), size=size, tail=_last_bytes(parts)
                )
                if end >= 0:
                    over.complete = True
                else:
                    self._over = over  # the rest is dropped by the next reads
                return over
            parts.append(piece)
            if end >= 0:
                line = b"".join(parts)
                if line.strip():
                    return line
                parts, size = [], 0

    async def _chunk(self) -> bytes | None:
        if self._pending:
            chunk, self._pending = self._pending, b""
            return chunk
        assert self.proc.stdout is not None
        chunk = await self.proc.stdout.read(_READ_CHUNK)
        return chunk or None

    async def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    # --- stopping ----------------------------------------------------------------------

    async def stop(self) -> None:
        """Close stdin; SIGTERM after STDIN_GRACE_S; SIGKILL after TERM_GRACE_S more.
        Bounded, and shielded callers may rely on it finishing."""
        if self._stopped:
            return
        self._stopped = True
        stdin = self.proc.stdin
        if stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                stdin.close()
        if not await self._exited(STDIN_GRACE_S):
            self._signal(signal.SIGTERM)
            if not await self._exited(TERM_GRACE_S):
                self._signal(signal.SIGKILL)
                await self._exited(KILL_WAIT_S)
        # A kill survivor (only possible without the subreaper) may hold stdout open.
        transport = getattr(self.proc, "_transport", None)
        if transport is not None:
            with contextlib.suppress(PermissionError):
                transport.close()

    def _signal(self, sig: int) -> None:
        # The whole process group: without a subreaper, the server and its children
        # that stayed in the group; with it, the subreaper alone (the server has a group
        # of its own), where SIGTERM starts the sweep of everything below.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, sig)

    async def _exited(self, within_s: float) -> bool:
        """Whether the process has exited within `within_s` seconds. Polls the return code:
        `Process.wait()` also waits for the pipes to close, which a child holding them
        would delay."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while self.proc.returncode is None:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_EXIT_POLL_S)
        return True


def _first_bytes(parts: list[bytes], n: int) -> bytes:
    out = bytearray()
    for part in parts:
        out += part[: n - len(out)]
        if len(out) >= n:
            break
    return bytes(out)


def _last_bytes(parts: list[bytes]) -> bytes:
    out = b""
    for part in reversed(parts):
        out = part[-(KEEP_BYTES - len(out)) :] + out
        if len(out) >= KEEP_BYTES:
            break
    return out


def _resolve(command: str, env: dict[str, str], cwd: str | None) -> str:
    """The executable `command` names, searched on the server's PATH (relative to its
    cwd when it holds a slash)."""
    if cwd is not None and not os.path.isdir(cwd):
        raise FileNotFoundError(errno.ENOENT, "no such directory", cwd)
    if os.sep in command:
        path = os.path.join(cwd or os.getcwd(), command)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
    else:
        found = shutil.which(command, path=env.get("PATH", os.defpath))
        if found is not None:
            return os.path.abspath(os.path.join(cwd or os.getcwd(), found))
    raise FileNotFoundError(errno.ENOENT, "command not found", command)
