"""What agentd sends is built from the protocol's attrs types and turned into JSON at
the edge (`params_to_wire`). The one hand-written wire form (part/delta, the hottest
path) must stay exactly what the generic converter would write, in the same order."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentd.protocol import types as t
from agentd.protocol.converter import converter, params_to_wire, to_camel
from agentd.protocol.methods import METHODS


def _generic(obj: object) -> dict:
    """What cattrs's generated unstructuring writes for `obj`, fields in class order."""
    return {
        to_camel(f.name): getattr(obj, f.name)
        for f in attrs.fields(type(obj))
        if getattr(obj, f.name) is not None
    }


@given(st.lists(st.text(), min_size=5, max_size=5))
def test_part_delta_wire_form_is_the_generic_one(values):
    params = t.PartDeltaParams(*values)
    wire = params_to_wire("part/delta", params)
    assert wire == _generic(params)
    # The order agentd has always written (field before delta).
    assert list(wire) == ["sessionId", "runId", "messageId", "partId", "field", "delta"]


def test_message_updated_carries_the_message_without_its_parts():
    message = t.Message(
        id="msg_1",
        session_id="ses_1",
        role="assistant",
        time=t.MessageTime(created=1),
        parts=[t.StepStartPart(id="prt_1")],
        finish_reason="stop",
    )
    wire = params_to_wire(
        "message/updated", t.MessageUpdatedParams("ses_1", "run_1", message=message)
    )
    assert list(wire) == ["sessionId", "runId", "message"]
    assert wire["message"] == {
        "id": "msg_1",
        "sessionId": "ses_1",
        "role": "assistant",
        "time": {"created": 1},
        "finishReason": "stop",
    }
    # The message itself is untouched, and its other uses keep the parts.
    assert message.parts == [t.StepStartPart(id="prt_1")]
    assert converter.unstructure(message)["parts"] == [{"id": "prt_1", "type": "step-start"}]


def test_every_method_agentd_sends_refuses_params_of_another_type():
    sent = [m for m in METHODS.values() if m.sender == "agentd"]
    assert len(sent) == 9
    wrong = t.McpStatusParams(server=t.McpStatusServer(name="s", state="ready"))
    for method in sent:
        if method.params is t.McpStatusParams:
            continue
        with pytest.raises(TypeError, match=method.name):
            params_to_wire(method.name, wrong)
    with pytest.raises(KeyError):
        params_to_wire("mcp/teleport", wrong)
