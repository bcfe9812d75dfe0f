"""The frame parser (agentd/framing.py) in process: every junk class the transport must
survive, at every split point, and a fuzz over random streams with many more cases than
the end-to-end fuzz (tests/reliability/test_fuzz.py) can afford. The daemon's use of the
parser is tested over real pipes in test_transport.py."""

from __future__ import annotations

import json
import os
import random

import framing_cases
import pytest
from framing_cases import TRICKY_TEXT, body

from agentd.framing import JUNK_WINDOW, MAX_HEADER_BYTES, Frame, FrameParser, FramingError

LIMIT = 2000
# Random streams run in process (seeds 0..CASES-1, the same on every run);
# `bench/soak.py framing` runs many more, from a random seed.
CASES = int(os.environ.get("AGENTD_FRAMING_CASES", "3000"))


def frame(obj: object) -> bytes:
    data = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(data) + data


def parse(chunks: list[bytes], limit: int = LIMIT) -> tuple[list[object], list[FramingError]]:
    """Feed the chunks, then end of input: (messages, errors). Checks the memory bound
    after every chunk."""
    parser = FrameParser(limit)
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
        assert parser.buffered <= limit + MAX_HEADER_BYTES + JUNK_WINDOW + len(chunk)
    events += parser.feed_eof()
    messages = [e.message for e in events if isinstance(e, Frame)]
    errors = [e for e in events if isinstance(e, FramingError)]
    return messages, errors


def every_split(data: bytes) -> list[list[bytes]]:
    """The stream whole, cut once at every offset, and one byte at a time."""
    cuts = [[data[:i], data[i:]] for i in range(1, len(data))]
    return [[data], *cuts, [data[i : i + 1] for i in range(len(data))]]


def ids(messages: list[object]) -> list[object]:
    return [m.get("id") for m in messages if isinstance(m, dict)]


AFTER = frame({"jsonrpc": "2.0", "id": "after", "method": "m"})
BODY = body("b", "x")

# The junk that made the daemon deaf, and its relatives: (name, bytes, errors it may get).
JUNK = [
    ("no newline", b"xyz"),
    ("negative", b"Content-Length: -5\r\n\r\n{}"),
    ("non-numeric", b"Content-Length: abc\r\n\r\n{}"),
    ("no Content-Length", b"Content-Type: application/json\r\n\r\n{}"),
    ("longer than announced", b"Content-Length: 5\r\n\r\n" + BODY),
    ("shorter than announced", b"Content-Length: %d\r\n\r\n" % (len(BODY) + 40) + BODY),
    ("shorter by one", b"Content-Length: %d\r\n\r\n" % (len(BODY) + 1) + BODY),
    ("huge", b"Content-Length: 99999999999999999999\r\n\r\n"),
    ("leading plus", b"Content-Length: +%d\r\n\r\n" % len(BODY) + BODY),
    ("inner space", b"Content-Length: 1 2\r\n\r\n{}"),
    ("empty body", b"Content-Length: 0\r\n\r\n"),
    ("over the limit", b"Content-Length: 5000\r\n\r\n" + b"[" + b"1," * 900),
    ("token only", b"Content-Length"),
    ("token and colon", b"Content-Length:"),
    ("token, colon, digits", b"Content-Length: 12"),
    ("token fragment", b"Content-Le"),
    ("header without blank line", b"Content-Length: 2\r\n"),
    ("unfinished other header", b"Content-Length: 2\r\nX-Partial: abc"),
    ("body without blank line", b"Content-Length: %d\r\n" % len(BODY) + BODY),
    ("binary", bytes(range(256))),
]


@pytest.mark.parametrize("glue", [b"", b"\r\n", b"\n\n"], ids=["glued", "crlf", "lflf"])
@pytest.mark.parametrize(("name", "junk"), JUNK, ids=[n for n, _ in JUNK])
def test_the_frame_after_any_junk_is_served_at_every_split(name, junk, glue):
    data = junk + glue + AFTER
    for chunks in every_split(data):
        messages, errors = parse(chunks)
        # (A body one byte short completed by a newline is valid JSON: "b" may land too.)
        assert ids(messages) in (["after"], ["b", "after"]), (name, chunks)
        assert all(e.code in (-32700, -32600) for e in errors)
        # At most one error per `content-length` text in the junk, or one for the junk.
        assert len(errors) <= max(1, junk.lower().count(b"content-length")), errors


@pytest.mark.parametrize("text", TRICKY_TEXT)
@pytest.mark.parametrize("pretty", [False, True])
def test_content_length_inside_a_valid_body_never_cuts_it(text, pretty):
    data = body("inner", text, pretty=pretty)
    stream = b"Content-Length: %d\r\n\r\n" % len(data) + data + AFTER
    for chunks in every_split(stream):
        messages, errors = parse(chunks)
        assert errors == []
        assert ids(messages) == ["inner", "after"]
        assert messages[0]["params"]["text"] == text


def test_well_formed_shapes_are_accepted_without_errors():
    data = body("s")
    n = str(len(data)).encode()
    for header in [
        b"Content-Length: " + n + b"\r\n\r\n",
        b"content-length: " + n + b"\n\n",
        b"CONTENT-LENGTH:" + n + b"\r\n\n",
        b"Content-Length:\t" + n + b" \t\r\n\r\n",
        b"Content-Length: 000" + n + b"\r\n\r\n",
        b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\nContent-Length: "
        + n
        + b"\r\n\r\n",
        b"Content-Length: " + n + b"\r\nContent-Type: x\r\n\r\n",
        # Several Content-Length lines: the last one counts.
        b"Content-Length: 7\r\nContent-Length: " + n + b"\r\n\r\n",
    ]:
        for chunks in every_split(b"\r\n" + header + data):
            messages, errors = parse(chunks)
            assert ids(messages) == ["s"], header
            assert errors == [], header


def test_batches_and_any_json_value_come_out_parsed():
    stream = frame([{"id": 1}, {"id": 2}]) + frame("just a string") + frame([])
    messages, errors = parse([stream])
    assert messages == [[{"id": 1}, {"id": 2}], "just a string", []]
    assert errors == []


def test_a_frame_over_the_limit_is_answered_at_once_and_never_buffered():
    parser = FrameParser(1000)
    events = parser.feed(b"Content-Length: 50000000\r\n\r\n")
    assert events == [FramingError(-32600, "frame of 50000000 bytes exceeds the limit of 1000")]
    for _ in range(200):  # 10 MB of it: memory stays flat
        assert parser.feed(b'"' + b"y" * 50_000) == []
        assert parser.buffered < 200
    events = parser.feed(AFTER)
    assert [e.message["id"] for e in events if isinstance(e, Frame)] == ["after"]


@pytest.mark.parametrize(
    "prefix",
    [b"Content-Length: ", b"Content-Type: ", b"", b"Content-Length: 5\r\nX-A: "],
    ids=["length value", "other header", "no header", "second header"],
)
def test_unbounded_lines_keep_memory_bounded(prefix):
    parser = FrameParser(LIMIT)
    errors = parser.feed(prefix)
    for _ in range(500):  # 5 MB without a newline
        errors += parser.feed(b"1" * 10_000)
        assert parser.buffered <= MAX_HEADER_BYTES + JUNK_WINDOW
    events = errors + parser.feed(b"\r\n" + AFTER)
    assert [e.message["id"] for e in events if isinstance(e, Frame)] == ["after"]
    assert len([e for e in events if isinstance(e, FramingError)]) <= 1


def test_a_flood_of_content_length_texts_stays_linear():
    """A body (and junk) stuffed with `Content-Length` texts: the parser does a bounded
    amount of work per byte (this would take minutes if each one rescanned the body)."""
    filler = body("flood", "}Content-Length: 1x" * 50_000)
    stream = b"Content-Length: %d\r\n\r\n" % len(filler) + filler
    junk = b"Content-Length: Content-Length:" * 20_000
    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
    messages, _ = parse([junk, *chunks, AFTER], limit=len(filler))
    assert ids(messages) == ["flood", "after"]


def test_end_of_input_inside_a_frame_is_reported():
    for partial in [b"Content-Length: 10\r\n", b"Content-Length: 10\r\n\r\n{", b"xyz"]:
        messages, errors = parse([partial])
        assert messages == []
        assert [e.code for e in errors] == [-32700], partial
    assert parse([b"\r\n\r\n"]) == ([], [])


def check_stream(seed: int, limit: int = LIMIT) -> None:
    """One fuzz case: random junk and frames (tests/framing_cases.py), cut at random
    places. Every well-formed frame comes out, once, in order; errors are -32700/-32600,
    at most one per junk segment or per `content-length` text in the junk; none without
    junk; memory stays bounded (see `parse`)."""
    rng = random.Random(seed)
    data, markers, junks, tokens = framing_cases.stream(rng, limit)
    messages, errors = parse(framing_cases.splits(rng, data), limit)
    assert [i for i in ids(messages) if str(i).startswith("F")] == markers, seed
    assert all(e.code in (-32700, -32600) for e in errors), seed
    assert len(errors) <= junks + tokens, (seed, errors)
    if junks == 0:
        assert errors == [], seed


def test_fuzz_every_well_formed_frame_lands():
    for seed in range(CASES):
        check_stream(seed)
