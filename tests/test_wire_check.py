"""The test client checks every message agentd sends against the published schema
(tests/wire_check.py); these tests check the checker."""

from __future__ import annotations

import pytest
from wire_check import check_message


def test_the_test_clients_schema_check_is_not_vacuous():
    """Every test checks what agentd sends with tests/wire_check.py: it must reject what
    the schema does not describe, or those checks prove nothing."""
    delta = {
        "sessionId": "ses_1",
        "runId": "run_1",
        "messageId": "msg_1",
        "partId": "prt_1",
        "field": "text",
        "delta": "x",
    }

    def note(method: str, params: object) -> dict:
        return {"jsonrpc": "2.0", "method": method, "params": params}

    assert check_message(note("part/delta", delta), None) is None
    bad = [
        note("part/delta", {**delta, "delta": 5}),
        note("part/delta", {**delta, "extra": 1}),
        note("part/delta", {k: v for k, v in delta.items() if k != "partId"}),
        note("part/delta", {**delta, "field": "title"}),
        note("session/teleport", {}),
        note("session/list", {}),  # the editor's method, not one agentd sends
        note(
            "part/updated",
            {
                "sessionId": "ses_1",
                "runId": "run_1",
                "messageId": "msg_1",
                "part": {"id": "p", "type": "text", "text": "x", "time": {"start": "1"}},
            },
        ),
        {"jsonrpc": "2.0", "id": 7, "method": "tool/execute", "params": {}},
        {"jsonrpc": "2.0", "id": 1, "result": {"sessions": [{"id": 1}]}},
        {"jsonrpc": "2.0", "id": 1, "error": {"code": "x", "message": "m"}},
        {"jsonrpc": "2.0", "id": 1},
    ]
    for msg in bad:
        assert check_message(msg, ["session/list"]) is not None, msg
    assert (
        check_message({"jsonrpc": "2.0", "id": 1, "result": {"sessions": []}}, ["session/list"])
        is None
    )


def test_a_message_that_breaks_the_schema_fails_the_test_that_received_it(spawn):
    d = spawn()
    # As the reader thread does with each message it takes from agentd's stdout.
    d._validate({"jsonrpc": "2.0", "method": "part/delta", "params": {"delta": 5}})
    with pytest.raises(AssertionError, match=r"part/delta params"):
        d.call("session/list", {})
    with pytest.raises(AssertionError, match=r"part/delta params"):
        d.stop()
    d.wire_errors.clear()  # for the fixture's own stop
