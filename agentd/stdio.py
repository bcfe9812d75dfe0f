"""agentd's stdin and stdout: reading and writing without ever blocking the event loop.

`StdinReader` hands what stdin delivers to a callback and can be paused (back-pressure);
`PipeWriter` writes frames, keeps what the editor has not taken yet in memory, and says
when too much waits (`paused`) or anything does (`congested`). Both take any kind of
descriptor: a pipe, a socket or a terminal is watched by the loop; anything else (a
regular file, /dev/null) is read by a thread or written with plain writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# Output waiting in memory beyond WRITE_HIGH_WATER (the editor is not reading): the
# writer is `paused` until it is back under WRITE_LOW_WATER (the JSON-RPC layer stops
# dispatching new input meanwhile). Streaming runs keep going, merging their deltas while
# the output waits (run_stream.py).
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
READ_CHUNK = 256 * 1024


def fileno(stream: Any) -> int | None:
    """The descriptor behind sys.stdin / sys.stdout; None when it was closed at start."""
    try:
        return int(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return None


def _pollable(fd: int) -> bool:
    """Whether the event loop can watch `fd`: a pipe, a socket or a terminal (epoll
    refuses regular files, /dev/null...; another device is taken as not, and read by a
    thread, which works for any). Asked of the descriptor, without opening one: a shared
    daemon at its open-file limit still serves the editor it accepted."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))


class StdinReader:
    """Reads stdin without blocking the loop, handing each chunk to `on_data` (and b""
    once, at end of input). `pause`/`resume` stop and restart reading: back-pressure.

    A stdin the loop can watch (pipe, socket, terminal) is read from the loop; anything
    else (a regular file, /dev/null, another device) by a dedicated thread, one chunk at
    a time and only while not paused. A read error (EIO from a terminal whose other side
    closed) is end of input."""

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self._on_data = on_data
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._was_blocking = True
        self._watching = False
        self._paused = False
        self._ended = False
        # Thread mode: set while the loop wants another chunk.
        self._want: threading.Event | None = None

    def start(self, loop: asyncio.AbstractEventLoop, fd: int | None) -> None:
        self._loop = loop
        if fd is None:
            loop.call_soon(self._deliver, b"")
            return
        if _pollable(fd):
            self._fd = fd
            self._was_blocking = os.get_blocking(fd)
            os.set_blocking(fd, False)
            self.resume()
            return
        self._want = threading.Event()
        self._want.set()
        threading.Thread(
            target=self._read_in_thread, args=(fd, self._want), name="agentd-stdin", daemon=True
        ).start()

    def pause(self) -> None:
        self._paused = True
        if self._watching and self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._watching = False

    def resume(self) -> None:
        self._paused = False
        if self._ended:
            return
        if self._want is not None:
            self._want.set()
        elif not self._watching and self._loop is not None and self._fd is not None:
            self._loop.add_reader(self._fd, self._read_ready)
            self._watching = True

    def close(self) -> None:
        self.pause()
        self._ended = True
        if self._fd is not None:
            # Leave stdin as we found it: a terminal's blocking mode is the shell's too.
            with contextlib.suppress(OSError):
                os.set_blocking(self._fd, self._was_blocking)
            self._fd = None

    def _read_ready(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            logger.debug("stdin read failed (%s): end of input", exc)
            data = b""
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self._ended:
            return
        if not data:
            self.pause()
            self._ended = True
        self._on_data(data)
        if self._want is not None and not self._paused and not self._ended:
            self._want.set()

    def _read_in_thread(self, fd: int, want: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            want.wait()
            want.clear()
            try:
                data = os.read(fd, READ_CHUNK)
            except OSError as exc:
                logger.debug("stdin read failed (%s): end of input", exc)
                data = b""
            try:
                loop.call_soon_threadsafe(self._deliver, data)
            except RuntimeError:
                return  # the loop is gone: the daemon is exiting
            if not data:
                return


class PipeWriter:
    """Writes frames to stdout without blocking the loop.

    A stdout the loop can watch (pipe, socket, terminal) is non-blocking: what the editor
    has not taken yet waits in memory and is written when the loop says it can be. Past
    WRITE_HIGH_WATER the writer is `paused` (new input waits, see agentd.jsonrpc) until it
    is back under WRITE_LOW_WATER; `congested` (anything waiting) makes runs merge their
    deltas. Anything else (a regular file, /dev/null) gets plain writes, which do not
    block for long. A broken pipe closes the writer: output is dropped from then on."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._sync = False
        self._was_blocking = True
        # What the editor has not taken yet (deleting from a bytearray's front is cheap).
        self._pending = bytearray()
        self._drained: list[Callable[[], None]] = []
        self.paused = False
        self.closed = False
        # Called when the writer leaves `paused` (or closes).
        self.on_resume: Callable[[], None] = lambda: None

    def attach(self, loop: asyncio.AbstractEventLoop, fd: int | None) -> None:
        self._loop = loop
        if fd is None:
            self.closed = True
            return
        self._fd = fd
        if _pollable(fd):
            self._was_blocking = os.get_blocking(fd)
            os.set_blocking(fd, False)
        else:
            self._sync = True

    @property
    def buffered(self) -> int:
        """Bytes written by agentd that the editor has not taken yet."""
        return len(self._pending)

    def write(self, data: bytes) -> None:
        if self.closed or self._fd is None:
            return
        if self._sync:
            self._write_blocking(data)
            return
        if not self._pending:
            try:
                n = os.write(self._fd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._lost(exc)
                return
            if n == len(data):
                return
            data = data[n:]
            assert self._loop is not None
            self._loop.add_writer(self._fd, self._write_ready)
        self._pending += data
        if len(self._pending) > WRITE_HIGH_WATER:
            self.paused = True

    def _write_blocking(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self._lost(exc)

    def _write_ready(self) -> None:
        assert self._fd is not None and self._loop is not None
        try:
            n = os.write(self._fd, self._pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self._pending[:n]
        if not self._pending:
            self._loop.remove_writer(self._fd)
        if self.paused and len(self._pending) <= WRITE_LOW_WATER:
            self.paused = False
            self.on_resume()
        if not self._pending:
            self._run_drained()

    def _lost(self, exc: Exception) -> None:
        logger.debug("stdout closed (%s): output is dropped from now on", exc)
        self.closed = True
        self._pending.clear()
        if self._loop is not None and self._fd is not None and not self._sync:
            self._loop.remove_writer(self._fd)
        self.paused = False
        self.on_resume()
        self._run_drained()

    def congested(self) -> bool:
        return bool(self._pending)

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call `callback` once nothing waits to be written (at once if nothing does)."""
        if not self._pending or self.closed:
            callback()
            return
        self._drained.append(callback)

    def _run_drained(self) -> None:
        callbacks, self._drained = self._drained, []
        for cb in callbacks:
            cb()

    def close(self) -> None:
        """Stop writing; give stdout back in the blocking mode it had."""
        if self._fd is not None and not self._sync:
            if self._loop is not None and self._pending:
                self._loop.remove_writer(self._fd)
            with contextlib.suppress(OSError):
                os.set_blocking(self._fd, self._was_blocking)
        self.closed = True
