"""Newline-delimited JSON framing (the Agent Client Protocol's), without I/O: bytes go
in, JSON messages and framing errors come out, as `agentd.framing` does for LSP framing.

One JSON value per line, `\\n`-terminated (a `\\r` before it is dropped). What it does
with anything else:

- A line that is not JSON is `-32700`; the next line is read as usual.
- A blank line is skipped.
- A line longer than `max_line_bytes` is `-32600` as soon as that many bytes have come
  without a newline; the rest of it is discarded as it arrives (never buffered).
- Bytes after the last newline at end of input are read as a last line.

Memory is bounded by `max_line_bytes`. orjson never writes a raw newline (one inside a
string is `\\n`), so `encode` only appends the terminator.
"""

from __future__ import annotations

from agentd.framing import INVALID_REQUEST, PARSE_ERROR, Event, Frame, FramingError, parse_json

# As the ACP SDKs: a message may be this large.
DEFAULT_MAX_LINE_BYTES = 50 * 1024 * 1024


def encode(body: bytes) -> bytes:
    return body + b"\n"


class LineParser:
    """Feed it bytes (`feed`), then `feed_eof` once; each returns the events completed."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()
        # Searched for a newline up to here (a long line is not searched again per read).
        self._searched = 0
        # Inside a line already refused as too long: skip up to its newline.
        self._discarding = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        buf = self._buf
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", max(start, self._searched))
            if nl < 0:
                break
            if self._discarding:
                self._discarding = False
            elif nl - start > self.max_line_bytes:
                out.append(self._too_long())
            else:
                self._line(bytes(buf[start:nl]), out)
            start = nl + 1
            self._searched = start
        del buf[:start]
        self._searched = len(buf)
        if self._discarding:
            buf.clear()
            self._searched = 0
        elif len(buf) > self.max_line_bytes:
            out.append(self._too_long())
            buf.clear()
            self._searched = 0
            self._discarding = True
        return out

    def feed_eof(self) -> list[Event]:
        out: list[Event] = []
        if self._buf and not self._discarding:
            self._line(bytes(self._buf), out)
        self._buf.clear()
        return out

    def _too_long(self) -> FramingError:
        return FramingError(
            INVALID_REQUEST, f"message longer than {self.max_line_bytes} bytes: discarded"
        )

    def _line(self, line: bytes, out: list[Event]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return
        try:
            message = parse_json(line)
        except ValueError:
            out.append(FramingError(PARSE_ERROR, "parse error: a line that is not JSON"))
            return
        out.append(Frame(message, len(line)))
