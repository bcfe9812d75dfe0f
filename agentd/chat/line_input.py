"""Lines typed at `agentd chat` (or piped to it), read so that Ctrl-C can interrupt a
waiting read."""

from __future__ import annotations

import asyncio
import os
from typing import TextIO


class Interrupted:
    """What a read returns when Ctrl-C cut it."""


INTERRUPTED = Interrupted()


class LineInput:
    """Lines from stdin, read on the event loop so that Ctrl-C can wake a waiting read
    (a read in a thread cannot be woken: the client used to hang in one until Enter, its
    daemon already gone). A terminal in canonical mode delivers whole lines and discards
    a typed line on Ctrl-C itself. Stdin that cannot be polled (a regular file,
    /dev/null) is read in a thread: such reads never wait."""

    def __init__(self, stream: TextIO | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.fd = -1 if stream is None else stream.fileno()
        self.tty = self.fd >= 0 and os.isatty(self.fd)
        self._buffer = bytearray()
        self._eof = self.fd < 0
        self._waiter: asyncio.Future[Interrupted | None] | None = None
        self._pollable = False
        if self.fd >= 0:
            try:
                self.loop.add_reader(self.fd, lambda: None)
                self.loop.remove_reader(self.fd)
                self._pollable = True
            except (OSError, ValueError):
                pass

    async def readline(self) -> str | Interrupted | None:
        """A line without its newline; None at end of input; INTERRUPTED after
        interrupt(). Piped input's last line may lack its newline. In a terminal, Ctrl-D
        means leave: text typed before it (which a first Ctrl-D hands over without a
        newline) is dropped, not sent; and the end is not final, the next read reads on."""
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                return line.decode("utf-8", "replace").rstrip("\r")
            if self._eof:
                rest = bytes(self._buffer)
                self._buffer.clear()
                if self.tty:
                    self._eof = False
                    return None
                return rest.decode("utf-8", "replace") if rest else None
            if not self._pollable:
                self._take(await self.loop.run_in_executor(None, self._read))
                continue
            waiter = self._waiter = self.loop.create_future()
            self.loop.add_reader(self.fd, self._readable)
            try:
                await waiter
            finally:
                self._waiter = None
                self.loop.remove_reader(self.fd)
            if waiter.result() is INTERRUPTED:
                self._buffer.clear()
                return INTERRUPTED

    def interrupt(self) -> bool:
        """Wake a waiting read with INTERRUPTED; False when none is waiting."""
        if self._waiter is None or self._waiter.done():
            return False
        self._waiter.set_result(INTERRUPTED)
        return True

    def _read(self) -> bytes | None:
        """What stdin has (b"" at its end; None: nothing after all)."""
        try:
            return os.read(self.fd, 65536)
        except BlockingIOError:
            return None  # stdin shared with a program that made it non-blocking
        except OSError:
            return b""  # EIO (the terminal went away), EBADF: end of input

    def _take(self, data: bytes | None) -> None:
        if data:
            self._buffer += data
        elif data is not None:
            self._eof = True

    def _readable(self) -> None:
        self._take(self._read())
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
