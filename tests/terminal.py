"""A program run in a pseudo-terminal of its own, typed at like a user would (stdlib
`pty`, no pexpect). Ctrl-C and Ctrl-D mean something only through a terminal's line
discipline: the program gets the terminal as its controlling terminal, in a new session
whose foreground process group it leads, so ^C typed here is a SIGINT to it and ^D an end
of input, and a typed line not yet sent is discarded by ^C, as in a real terminal.

Output is waited for with deadlines (`expect`), never with sleeps.
"""

from __future__ import annotations

import codecs
import errno
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path


def _take_terminal() -> None:
    # In the child, after setsid (start_new_session): stdin, the pty, becomes the
    # controlling terminal of the new session.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path | str | None = None,
        *,
        rows: int = 40,
        cols: int = 200,
        timeout: float = 30,
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_take_terminal,
            )
        finally:
            os.close(slave)
        self.fd = master
        self.timeout = timeout
        self.output = ""  # everything shown so far (the echo of what was typed too)
        self.pos = 0  # where the next expect starts looking
        self.at_eof = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    # --- typing ---------------------------------------------------------------------------

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def sendline(self, text: str) -> None:
        self.send(text + "\n")

    def ctrl_c(self) -> None:
        self.send("\x03")

    def ctrl_d(self) -> None:
        self.send("\x04")

    # --- reading --------------------------------------------------------------------------

    def _read(self, deadline: float) -> bool:
        """Read what is there, waiting until `deadline`; False when nothing came."""
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.fd], [], [], left)[0]:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError as exc:
            # EIO: every holder of the terminal's other side has closed it.
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self.at_eof = True
            self.output += self._decoder.decode(b"", final=True)
            return False
        self.output += self._decoder.decode(data)
        return True

    def expect(self, pattern: str, timeout: float | None = None) -> re.Match[str]:
        """The first match of `pattern` in the output after the last match, waiting for it
        until the deadline; an AssertionError showing the output when it does not come."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            match = regex.search(self.output, self.pos)
            if match:
                self.pos = match.end()
                return match
            if self.at_eof or time.monotonic() >= deadline:
                why = "the terminal closed" if self.at_eof else "timed out"
                raise AssertionError(
                    f"{why} waiting for {pattern!r}; output since the last match:\n"
                    f"{self.output[self.pos :]!r}"
                )
            self._read(deadline)

    def ended(self, timeout: float | None = None) -> int:
        """Wait for the end of output and of the program; its exit code (128+n for a
        signal n)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.at_eof:
            if time.monotonic() >= deadline:
                raise AssertionError(f"still running; last output:\n{self.output[-2000:]!r}")
            self._read(deadline)
        code = self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        return 128 - code if code < 0 else code

    def hang_up(self, timeout: float | None = None) -> int:
        """Close the terminal, as when its window is closed: the kernel sends SIGHUP to
        the program. Its exit code."""
        os.close(self.fd)
        self.fd = -1
        self.at_eof = True
        code = self.proc.wait(timeout=self.timeout if timeout is None else timeout)
        return 128 - code if code < 0 else code

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
