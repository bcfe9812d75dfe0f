"""A hostile or broken model server: what it reports is validated at the provider edge,
and nothing it sends can lock a session or grow without bound."""

from __future__ import annotations

import json

import pytest
from helpers import chat, text_of

MAX_REPORTED = 10**12


def chunk(delta: dict, finish: str | None = None, usage: str | None = None) -> str:
    """One chat.completion.chunk; `usage` is raw JSON text, so it may hold what
    json.dumps would refuse to write (NaN, 1e400)."""
    body = json.dumps(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "scripted",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )
    if usage is not None:
        body = body[:-1] + ', "usage": ' + usage + "}"
    return body


def answer_with_usage(prompt: str, completion: str = "1") -> dict:
    usage = f'{{"prompt_tokens": {prompt}, "completion_tokens": {completion}}}'
    return {
        "events": [
            chunk({"role": "assistant", "content": "ok"}),
            chunk({}, "stop", usage=usage),
        ]
    }


USAGE_CASES = [
    (str(2**62), MAX_REPORTED),
    (str(2**63 + 5), MAX_REPORTED),
    ("1e20", MAX_REPORTED),
    (str(10**30), MAX_REPORTED),
    ("1e400", 0),
    ("NaN", 0),
    ("-Infinity", 0),
    ("-5", 0),
    ('"100"', 0),
    ("true", 0),
    ("[1]", 0),
    ("12.9", 12),
]


def test_usage_a_model_reports_is_validated_and_clamped(spawn, model):
    d = spawn(model.base_url)
    sessions = {}
    for reported, counted in USAGE_CASES:
        sid = sessions[reported] = d.call("session/create", {"title": reported})["session"]["id"]
        for _ in range(3):  # three answers' worth of the same figure, summed
            model.enqueue(answer_with_usage(reported, reported))
            message = chat(d, sid, "count")["message"]
            assert message["finishReason"] == "stop" and text_of(message) == "ok", reported
            assert message["usage"]["inputTokens"] == counted, reported
            assert message["usage"]["outputTokens"] == counted, reported
        session = d.call("session/get", {"sessionId": sid})["session"]
        assert session["status"] == "idle"
        assert session["usage"]["inputTokens"] == 3 * counted, reported
    d.stop()
    # Every session is still usable after a restart, with the same totals.
    d2 = spawn(model.base_url)
    for reported, counted in USAGE_CASES:
        sid = sessions[reported]
        model.enqueue({"text": "still usable"})
        assert text_of(chat(d2, sid, "again")["message"]) == "still usable"
        session = d2.call("session/get", {"sessionId": sid})["session"]
        assert session["usage"]["inputTokens"] >= 3 * counted, reported


def test_an_unknown_finish_reason_is_kept_short(spawn, model):
    d = spawn(model.base_url)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    model.enqueue(
        {"events": [chunk({"role": "assistant", "content": "hi"}), chunk({}, "x" * 100_000)]}
    )
    message = chat(d, sid, "go")["message"]
    [finish] = [p for p in message["parts"] if p["type"] == "step-finish"]
    assert finish["reason"] == "x" * 64


def test_a_long_stream_of_tiny_deltas_arrives_and_is_stored_whole(spawn, model):
    d = spawn(model.base_url)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    text = "".join(f"{i % 10}" for i in range(40_000))
    model.enqueue({"text": text, "chunkSize": 1})
    chat_id = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}
    )
    # Read while it streams: the live message holds the text so far, in order.
    d.wait_for(lambda: len(d.notifications("part/delta")) > 5)
    [live] = [
        m
        for m in d.call("session/messages", {"sessionId": sid})["messages"]
        if m["role"] == "assistant"
    ]
    assert text.startswith(text_of(live))
    message = d.result(chat_id, timeout=120)["message"]
    assert text_of(message) == text
    streamed = "".join(n["params"]["delta"] for n in d.notifications("part/delta"))
    assert streamed == text
    d.stop()
    d2 = spawn(model.base_url)
    [_, stored] = d2.call("session/messages", {"sessionId": sid})["messages"]
    assert text_of(stored) == text


def replay_parts(notes: list[dict]) -> dict[str, str]:
    """Each text or reasoning part's text as an editor assembles it from notifications."""
    text: dict[str, str] = {}
    for n in notes:
        p = n["params"]
        if n["method"] == "part/updated" and p["part"]["type"] in ("text", "reasoning"):
            text[p["part"]["id"]] = p["part"]["text"]
        elif n["method"] == "part/delta":
            text[p["partId"]] = text.get(p["partId"], "") + p["delta"]
    return text


@pytest.mark.parametrize(
    "pattern",
    [
        ["reasoning_content", "content"],  # strict alternation, token by token
        ["reasoning_content", "reasoning_content", "content"],
        ["content", "reasoning", "content", "content"],  # the other reasoning field
    ],
)
def test_a_model_switching_between_reasoning_and_text_cannot_multiply_parts(spawn, model, pattern):
    """A part per switch made memory and the log grow with tokens (200,000 one-character
    chunks: 200,002 parts, 726 MiB); past a cap the step keeps one open part of each kind."""
    d = spawn(model.base_url)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    count = 6_000
    fields = [pattern[i % len(pattern)] for i in range(count)]
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({field: str(i % 10)}) for i, field in enumerate(fields)]
    events.append(chunk({}, "stop"))
    model.enqueue({"events": events})
    message = chat(d, sid, "go")["message"]
    texts = [p for p in message["parts"] if p["type"] in ("text", "reasoning")]
    assert len(texts) <= 66, len(texts)
    want_text = "".join(str(i % 10) for i, f in enumerate(fields) if f == "content")
    want_reasoning = "".join(
        str(i % 10) for i, f in enumerate(fields) if f in ("reasoning_content", "reasoning")
    )
    assert text_of(message) == want_text
    reasoning = "".join(p["text"] for p in message["parts"] if p["type"] == "reasoning")
    assert reasoning == want_reasoning
    # What the editor assembled from the notifications is the same text, part by part.
    streamed = replay_parts(d.notifications())
    assert {p["id"]: p["text"] for p in texts} == {p["id"]: streamed[p["id"]] for p in texts}
    # Every part was closed, and the stored message is the same.
    assert all(p["time"].get("end") for p in texts)
    d.stop()
    d2 = spawn(model.base_url)
    stored = d2.call("session/messages", {"sessionId": sid})["messages"][-1]
    assert stored["parts"] == message["parts"]


def rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / (1024 * 1024)


@pytest.mark.parametrize(
    "spec, what",
    [
        # One 20 MiB line with no end (the first 16 MiB are enough to stop).
        ({"events": ["x" * (20 * 1024 * 1024)]}, "an event larger than 16 MiB"),
        # One event made of many data: lines.
        ({"events": ["\ndata: ".join(["y" * 1024 * 1024] * 20)]}, "an event larger than 16 MiB"),
        # A whole JSON answer (the server ignored stream=true).
        (
            {"error": {"status": 200, "body": {"pad": "z" * (20 * 1024 * 1024)}}},
            "a response body larger than 16 MiB",
        ),
        # An error answer's body.
        (
            {"error": {"status": 500, "body": {"error": {"message": "e" * (3 * 1024 * 1024)}}}},
            "an error body larger than 1 MiB",
        ),
    ],
    ids=["long-line", "many-data-lines", "json-body", "error-body"],
)
def test_oversized_answers_end_as_a_named_error_without_holding_them(spawn, model, spec, what):
    d = spawn(model.base_url)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    model.enqueue(spec)
    message = chat(d, sid, "go")["message"]
    assert message["finishReason"] == "error"
    assert message["error"]["name"] == "ResponseTooLarge"
    assert what in message["error"]["message"]
    assert len(model.requests()) == 1  # not retried: the same request brings the same
    assert rss_mib(d.proc.pid) < 200
    model.enqueue({"text": "fine"})
    assert text_of(chat(d, sid, "again")["message"]) == "fine"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(spawn, model, status):
    from agentd.scripted_model import ScriptedModelServer

    with ScriptedModelServer() as elsewhere:
        d = spawn(model.base_url)
        sid = d.call("session/create", {"title": "t"})["session"]["id"]
        target = f"{elsewhere.base_url}/chat/completions"
        model.enqueue({"error": {"status": status, "body": {}, "headers": {"location": target}}})
        message = chat(d, sid, "go")["message"]
        assert message["error"]["name"] == "ProviderRedirect"
        assert message["error"]["data"]["location"] == target
        assert elsewhere.requests() == []  # neither the key nor the conversation went there
