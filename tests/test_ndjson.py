"""NDJSON framing (agentd acp's) in process: every line a client may send, split into
pieces anywhere, gives the same messages and errors, and memory stays bounded."""

from __future__ import annotations

import json
import random

from agentd.framing import Frame, FramingError
from agentd.ndjson import LineParser, encode


def events(parser: LineParser, data: bytes, cuts: list[int]) -> list[object]:
    out: list[object] = []
    last = 0
    for cut in [*cuts, len(data)]:
        out += parser.feed(data[last:cut])
        last = cut
    return out + parser.feed_eof()


def summary(items: list[object]) -> list[object]:
    return [i.message if isinstance(i, Frame) else ("error", i.code) for i in items]


STREAM = (
    b'{"id":1}\n'
    b"\n"  # blank: skipped
    b"not json\n"
    b'{"id":2,"text":"with \\\\n and \\"quotes\\" and \\u00e9"}\r\n'
    b"   \n"
    b'[{"id":3},{"id":4}]\n'
    b"{\"id\":5, broken\n"
    b'{"id":6}'  # no newline before the end of input: still read
)
EXPECTED = [
    {"id": 1},
    ("error", -32700),
    {"id": 2, "text": 'with \\n and "quotes" and \u00e9'},
    [{"id": 3}, {"id": 4}],
    ("error", -32700),
    {"id": 6},
]


def test_lines_junk_and_the_last_unterminated_line_whole():
    assert summary(events(LineParser(), STREAM, [])) == EXPECTED


def test_the_same_stream_cut_anywhere_gives_the_same_events():
    rng = random.Random(7)
    for _ in range(2000):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 12)))
        assert summary(events(LineParser(), STREAM, cuts)) == EXPECTED, cuts


def test_a_line_over_the_limit_is_refused_as_it_arrives_and_the_next_is_read():
    parser = LineParser(max_line_bytes=1000)
    big = b'{"x":"' + b"a" * 5000 + b'"}'
    got = []
    for i in range(0, len(big), 300):  # arriving in pieces, never whole
        got += parser.feed(big[i : i + 300])
        assert parser.buffered <= 1300
    got += parser.feed(b'\n{"id":9}\n')
    assert summary(got) == [("error", -32600), {"id": 9}]
    # Whole in one read: the same.
    assert summary(LineParser(max_line_bytes=1000).feed(big + b'\n{"id":9}\n')) == [
        ("error", -32600),
        {"id": 9},
    ]


def test_a_line_of_50_mib_is_accepted_by_default():
    text = "b" * (50 * 1024 * 1024 - 20)
    line = encode(json.dumps({"t": text}).encode())
    assert len(line) <= 50 * 1024 * 1024 + 1
    [frame] = LineParser().feed(line)
    assert isinstance(frame, Frame) and frame.message["t"] == text


def test_encode_never_adds_a_newline_inside_a_message():
    body = json.dumps({"t": "a\nb\r\nc"}).encode()
    assert encode(body).count(b"\n") == 1
    [frame] = LineParser().feed(encode(body))
    assert isinstance(frame, Frame) and frame.message == {"t": "a\nb\r\nc"}
    assert not any(isinstance(e, FramingError) for e in LineParser().feed(encode(body)))
