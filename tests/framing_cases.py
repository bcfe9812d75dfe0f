"""Hostile byte streams for the framing layer, shared by the in-process fuzz of the parser
(tests/test_framing.py, bench/soak.py framing) and the end-to-end one against the daemon
(tests/reliability/test_fuzz.py).

A stream is a list of segments: well-formed frames (each carrying a marker id, so a test
can tell which arrived) and junk (bad headers, bodies shorter or longer than announced,
frames over the limit, headers glued to garbage, fragments of the `Content-Length` text,
random bytes). A well-formed frame's body may itself contain `Content-Length` text in
its strings, which must never cut it.

Everything is drawn from a `random.Random`, so a case is its seed: cheap enough to run
tens of thousands in process (hypothesis's own strategies cost ~30 ms a case here), and
the end-to-end fuzz lets hypothesis choose and remember the seeds (`st.randoms()`).
"""

from __future__ import annotations

import json
import random
from typing import Any

Stream = tuple[bytes, list[str], int, int]

# What frames' JSON strings may contain: header-like text that must stay inside the body.
TRICKY_TEXT = [
    "Content-Length: 5\r\n\r\n{}",
    "content-length:12\n\n",
    "CONTENT-LENGTH: 99999999999999999999\r\n",
    "x}Content-Length: 3\r\n\r\n{}",
    '"}]Content-Length: 2\n\n[]',
    "Content-Length",
    "\\r\\n\\r\\n",
]
JUNK_KINDS = [
    "bytes",
    "text",
    "negative",
    "non-numeric",
    "plus",
    "huge",
    "spaces-inside",
    "no-length",
    "short-body",
    "long-body",
    "not-json",
    "empty-body",
    "over-limit",
    "token-only",
    "token-colon",
    "unfinished-header",
    "no-blank-line",
    "token-fragment",
    "long-line",
]


def body(marker: str, text: str = "", pretty: bool = False) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": marker, "method": "$/probe"}
    if text:
        msg["params"] = {"text": text, "more": [text, {"k": text}]}
    # Pretty-printing puts raw newlines (JSON whitespace) in the body.
    return json.dumps(msg, indent=1 if pretty else None).encode()


# Printable ASCII, some non-ASCII (multi-byte in UTF-8), quotes and backslashes.
_ALPHABET = [chr(c) for c in range(32, 127)] + ["é", "ß", "中", "𝄞", "\u2028", '"', "\\"]


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_ALPHABET, k=n))


def frame(rng: random.Random, marker: str) -> bytes:
    """A well-formed frame in one of the shapes agentd accepts."""
    text = rng.choice(["", *TRICKY_TEXT, _text(rng, rng.randrange(40))])
    data = body(marker, text, pretty=rng.random() < 0.3)
    nl = rng.choice([b"\r\n", b"\n"])
    name = rng.choice([b"Content-Length", b"content-length", b"CONTENT-LENGTH"])
    sp1 = rng.choice([b"", b" ", b"\t", b"  "])
    sp2 = rng.choice([b"", b" ", b"\t "])
    header = name + b":" + sp1 + str(len(data)).encode() + sp2 + nl
    other = rng.choice([b"", b"Content-Type: application/vscode-jsonrpc; charset=utf-8", b"X-Y: 1"])
    other = other + nl if other else b""
    if rng.random() < 0.5:
        return other + header + nl + data
    return header + other + nl + data


def junk(rng: random.Random, limit: int, kind: str | None = None) -> bytes:
    """Bytes that are not a well-formed frame (though they may contain pieces of one)."""
    kind = kind or rng.choice(JUNK_KINDS)
    inner = body("junk", rng.choice(["", *TRICKY_TEXT]))
    nl = rng.choice([b"\r\n", b"\n"])

    def header(value: bytes) -> bytes:
        return b"Content-Length: " + value + nl + nl

    if kind == "bytes":
        return rng.randbytes(rng.randrange(1, 300))
    if kind == "text":
        return _text(rng, rng.randrange(1, 80)).encode()
    if kind == "negative":
        return header(b"-%d" % rng.randrange(1, 10**6)) + b"{}"
    if kind == "non-numeric":
        return header("".join(rng.choices("abcxyz.,;e", k=rng.randrange(1, 8))).encode()) + b"{}"
    if kind == "plus":
        return header(b"+%d" % len(inner)) + inner
    if kind == "huge":
        return header(b"9" * rng.randrange(19, 60))
    if kind == "spaces-inside":
        return header(b"1 2") + b"{}"
    if kind == "no-length":
        return b"Content-Type: application/json" + nl + nl + inner
    if kind == "short-body":
        return (
            header(b"%d" % (len(inner) + rng.randrange(1, 200)))
            + inner[: rng.randrange(len(inner))]
        )
    if kind == "long-body":
        return header(b"%d" % rng.randrange(1, len(inner))) + inner
    if kind == "not-json":
        data = rng.randbytes(rng.randrange(1, 50)).replace(b"{", b"(") + b"{"
        return header(b"%d" % len(data)) + data
    if kind == "empty-body":
        return header(b"0")
    if kind == "over-limit":
        size = limit + rng.randrange(1, 3000)
        return header(b"%d" % size) + (b'{"x":"' + b"y" * size)[: rng.randrange(size)]
    if kind == "token-only":
        return rng.choice([b"Content-Length", b"content-length", b"CONTENT-LENGTH"])
    if kind == "token-colon":
        return b"Content-Length:" + rng.choice([b"", b" ", b" 1", b" 12"])
    if kind == "unfinished-header":
        return b"Content-Length: %d" % len(inner) + nl + b"X-Partial: abc"
    if kind == "no-blank-line":
        return b"Content-Length: %d" % len(inner) + nl + inner
    if kind == "token-fragment":
        return b"Content-Length"[: rng.randrange(1, 14)]
    assert kind == "long-line", kind
    prefix = rng.choice([b"Content-Length: ", b"X-Junk: ", b""])
    return prefix + b"7" * rng.randrange(100, 20_000)


def stream(rng: random.Random, limit: int, max_segments: int = 8) -> Stream:
    """(bytes, marker ids of its well-formed frames in order, junk segments, count of
    `content-length` texts in the junk). Junk is often glued straight to a frame's front;
    the stream always ends with a frame, the one after the last junk."""
    out = b""
    markers: list[str] = []
    junks = tokens = 0
    count = rng.randrange(max_segments + 1)
    for i in range(count + 1):
        if i < count and rng.random() < 0.5:
            piece = junk(rng, limit) + rng.choice([b"", b"", b"\r\n", b"\n\n"])
            junks += 1
            tokens += piece.lower().count(b"content-length")
            out += piece
        else:
            markers.append(f"F{i}")
            out += frame(rng, f"F{i}")
    return out, markers, junks, tokens


def splits(rng: random.Random, data: bytes) -> list[bytes]:
    """`data` cut into chunks at random places (one byte at a time, sometimes)."""
    if len(data) < 600 and rng.random() < 0.3:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted({rng.randrange(len(data) + 1) for _ in range(rng.randrange(13))})
    chunks = []
    prev = 0
    for cut in [*cuts, len(data)]:
        chunks.append(data[prev:cut])
        prev = cut
    return [c for c in chunks if c]
