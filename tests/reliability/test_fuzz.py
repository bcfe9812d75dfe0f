"""Property-based fuzzing of the framing and of every method's params, against one real
daemon over real pipes. After each case the daemon must still answer; bad input gets the
contract's error code (never -32603) or is ignored; memory stays bounded.

`AGENTD_FUZZ_EXAMPLES` sets the number of cases per property (CI runs a bounded count).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import framing_cases
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rpc_client import Daemon, daemon_env

pytestmark = pytest.mark.reliability

EXAMPLES = int(os.environ.get("AGENTD_FUZZ_EXAMPLES", "150"))
SCHEMA = json.loads((Path(__file__).parents[2] / "protocol" / "agentd.schema.json").read_text())
EDITOR_REQUESTS = [
    name
    for name, m in SCHEMA["methods"].items()
    if m["sender"] == "editor" and m["kind"] == "request" and name not in ("shutdown",)
]
CONTRACT_CODES = {-32700, -32600, -32601, -32602, -32002, -32800, 1001, 1002, 1003}
COUNTS = {"frames": 0, "params": 0, "ids": 0}
LIMIT = 200_000


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_server):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("fuzz")
    d = Daemon(daemon_env(tmp, model_server.base_url), args=["--max-frame-bytes", str(LIMIT)])
    d.initialize(workspaceRoot=str(tmp))
    yield d
    print(f"\nfuzz cases run: {COUNTS}")
    d.stop()


def alive(d: Daemon) -> None:
    """The daemon still answers, and nothing it sent was an internal error."""
    assert "models" in d.call("models/list", {}, timeout=30)
    bad = [m for m in d.messages if m.get("error", {}).get("code") == -32603]
    assert not bad, bad[:3]
    d.messages.clear()
    d.responses.clear()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rng=st.randoms(use_true_random=False))
def test_every_frame_after_junk_is_answered(daemon, rng):
    """Random junk and well-formed frames (tests/framing_cases.py: bad, huge and
    over-limit headers, short and long bodies, junk glued to a header's front, bodies
    with `Content-Length` in their strings), written in random pieces. Every well-formed
    frame is a request for an unknown method: each must get its -32601, and junk only
    id-null -32700/-32600, at most one per junk segment or `content-length` text in it."""
    data, markers, junks, tokens = framing_cases.stream(rng, LIMIT)
    for chunk in framing_cases.splits(rng, data):
        daemon.send_raw(chunk)
    daemon.wait_for(lambda: all(m in daemon.responses for m in markers), timeout=30)
    assert all(daemon.responses[m]["error"]["code"] == -32601 for m in markers)
    errors = [m["error"] for m in daemon.messages if "error" in m and m.get("id") is None]
    assert all(e["code"] in (-32700, -32600) for e in errors), errors
    assert len(errors) <= junks + tokens, errors
    alive(daemon)
    COUNTS["frames"] += 1


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=st.sampled_from(EDITOR_REQUESTS), params=json_values)
def test_any_params_get_a_contract_answer(daemon, method, params):
    msg_id = daemon.request_async(method, params)
    resp = daemon.response(msg_id, timeout=30)
    if "error" in resp:
        assert resp["error"]["code"] in CONTRACT_CODES, resp
        assert "Traceback" not in json.dumps(resp)
    alive(daemon)
    COUNTS["params"] += 1


@settings(
    max_examples=max(20, EXAMPLES // 3),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    text=st.text(max_size=2000),
    deep=st.integers(1, 3000),
    blob=st.binary(min_size=1, max_size=64),
)
def test_huge_deep_and_invalid_utf8_payloads(daemon, text, deep, blob):
    sid = daemon.call("session/create", {"title": text[:300]})["session"]["id"]
    nested = "[" * deep + "]" * deep
    body = (
        '{"jsonrpc":"2.0","id":"deep","method":"session/list","params":{"x":' + nested + "}}"
    ).encode()
    daemon.send_raw(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    # Too deep to parse is a parse error (id null); otherwise an answer to "deep".
    resp = daemon.wait_for(
        lambda: [
            m
            for m in daemon.messages
            if m.get("id") == "deep"
            or (m.get("id") is None and m.get("error", {}).get("code") == -32700)
        ],
        timeout=30,
    )[0]
    assert "result" in resp or resp["error"]["code"] in CONTRACT_CODES
    raw = (
        b'{"jsonrpc":"2.0","id":"utf","method":"session/get","params":{"sessionId":"\xff'
        + blob
        + b'"}}'
    )
    daemon.send_raw(b"Content-Length: %d\r\n\r\n" % len(raw) + raw)
    daemon.wait_for(
        lambda: any(m.get("id") in ("utf", None) and "error" in m for m in daemon.messages),
        timeout=30,
    )
    over = (
        b'{"jsonrpc":"2.0","id":"big","method":"session/list","params":{"q":"'
        + b"x" * 300_000
        + b'"}}'
    )
    daemon.send_raw(b"Content-Length: %d\r\n\r\n" % len(over) + over)
    daemon.wait_for(
        lambda: any(m.get("error", {}).get("code") == -32600 for m in daemon.messages), timeout=30
    )
    assert daemon.call("session/delete", {"sessionId": sid}) == {"deleted": True}
    alive(daemon)
    COUNTS["frames"] += 3


@settings(
    max_examples=max(20, EXAMPLES // 3),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ids=st.lists(st.one_of(st.integers(0, 5), st.text(max_size=5)), min_size=1, max_size=6))
def test_duplicate_ids_and_stray_responses(daemon, ids):
    for i in ids:
        daemon.send({"jsonrpc": "2.0", "id": i, "result": {"stray": True}})
        daemon.send({"jsonrpc": "2.0", "id": i, "error": {"code": 5, "message": "stray"}})
        daemon.send({"jsonrpc": "2.0", "id": i, "method": "models/list"})
    alive(daemon)
    COUNTS["ids"] += 1


def test_memory_stays_bounded_after_fuzzing(daemon):
    with open(f"/proc/{daemon.proc.pid}/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    assert rss_kib < 400 * 1024, f"RSS {rss_kib} KiB after fuzzing"
