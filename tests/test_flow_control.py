"""Flow control over real pipes: an editor that stops reading agentd's stdout.

agentd stops taking new input once a bounded amount of output waits (and a bounded
number of requests is being handled), stops reading stdin once a bounded amount of input
waits, resumes when the editor reads again, and never holds back the editor's answers to
its own requests (protocol/README.md § Transport). Memory is measured with psutil while
the editor is not reading: until agentd has nothing left it can do (its CPU time stops
moving), the peak RSS is recorded.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.reliability

MiB = 1024 * 1024
RSS_LIMIT = 300 * MiB


def big_sessions(d: Any, count: int) -> None:
    """Sessions with 8,000-character titles: listing 300 of them is ~2.6 MB of JSON."""
    ids = [
        d.request_async("session/create", {"title": f"s{i} " + "x" * 8000}) for i in range(count)
    ]
    for msg_id in ids:
        d.result(msg_id, timeout=60)


def settle(pid: int, *, busy_cpu_s: float = 0.1, deadline_s: float = 90) -> int:
    """Wait until agentd has nothing left to do while the editor is not reading (its CPU
    time moves less than `busy_cpu_s` in a second); the peak RSS seen meanwhile."""
    proc = psutil.Process(pid)
    peak = 0
    samples: list[tuple[float, float]] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        peak = max(peak, proc.memory_info().rss)
        times = proc.cpu_times()
        now = time.monotonic()
        samples.append((now, times.user + times.system))
        window = [(t, c) for t, c in samples if t >= now - 1.0]
        if now - samples[0][0] >= 1.0 and window[-1][1] - window[0][1] < busy_cpu_s:
            return peak
        time.sleep(0.05)  # the sampling interval
    raise TimeoutError(f"agentd never settled (peak RSS {peak / MiB:.0f} MiB)")


def collect(d: Any, prefix: str, seen: list[Any]) -> Any:
    """A wait_for predicate: move the answers whose id starts with `prefix` into `seen`
    (dropping their results: hundreds of megabytes of them), count them."""

    def predicate() -> int:
        for m in d.messages:
            if str(m.get("id", "")).startswith(prefix) and "method" not in m:
                seen.append((m["id"], "result" in m, m.get("error")))
        d.messages[:] = [m for m in d.messages if not str(m.get("id", "")).startswith(prefix)]
        for key in [k for k in d.responses if str(k).startswith(prefix)]:
            del d.responses[key]
        return len(seen)

    return predicate


def test_an_editor_that_stops_reading_bounds_agentd_memory_and_loses_nothing(spawn):
    """3,000 `session/list` requests while the editor reads nothing: one in 25 lists 300
    big sessions (~2.6 MB each, 310 MB in all), each carries 1 KB of padding. agentd
    stops reading (the editor's writes block), stays well under 300 MiB, and once the
    editor reads again answers every request, in order."""
    d = spawn()
    big_sessions(d, 300)
    d.stop_reading()
    total = 3000

    def flood() -> None:
        for i in range(total):
            params = {"limit": 500 if i % 25 == 0 else 1, "pad": "p" * 1000}
            d.send({"jsonrpc": "2.0", "id": f"r{i}", "method": "session/list", "params": params})

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    peak = settle(d.proc.pid)
    print(f"peak RSS while the editor was not reading: {peak / MiB:.0f} MiB")
    assert peak < RSS_LIMIT, f"peak RSS {peak / MiB:.0f} MiB"
    assert sender.is_alive(), "agentd read all 3 MB of requests while its output waited"

    d.resume_reading()
    seen: list[Any] = []
    d.wait_for(lambda: collect(d, "r", seen)() == total, timeout=180)
    sender.join(30)
    assert [s[0] for s in seen] == [f"r{i}" for i in range(total)]
    assert all(ok for _, ok, _ in seen), [e for _, ok, e in seen if not ok][:3]


def test_an_editor_that_stops_reading_mid_stream_can_still_abort_and_shut_down(spawn, model):
    """The editor stops reading while a run streams and piles up 50 big listings: agentd's
    memory stays bounded (the run merges its deltas), and once the editor reads again the
    abort it sent meanwhile works, nothing streamed is lost, and shutdown works."""
    d = spawn(model.base_url)
    big_sessions(d, 100)
    sid = d.call("session/create", {"title": "streaming"})["session"]["id"]
    model.enqueue({"text": "tok " * 6000, "chunkSize": 4, "delayMs": 10})  # a minute
    chat = d.request_async(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}
    )
    d.wait_for(lambda: d.notifications("part/delta"))
    d.stop_reading()
    for i in range(50):
        d.request_async("session/list", {"limit": 500}, msg_id=f"l{i}")
    peak = settle(d.proc.pid)
    print(f"peak RSS while the editor was not reading: {peak / MiB:.0f} MiB")
    assert peak < RSS_LIMIT, f"peak RSS {peak / MiB:.0f} MiB"
    d.request_async("session/abort", {"sessionId": sid}, msg_id="abort")

    d.resume_reading()
    seen: list[Any] = []
    d.wait_for(lambda: collect(d, "l", seen)() == 50, timeout=120)
    assert all(ok for _, ok, _ in seen)
    assert d.result("abort", timeout=30)["aborted"] is True
    message = d.result(chat, timeout=30)["message"]
    assert message["finishReason"] == "aborted"
    # Applying the notifications reproduces the aborted message's text.
    text = next(p for p in message["parts"] if p["type"] == "text")
    streamed = "".join(
        n["params"]["delta"]
        for n in d.notifications("part/delta")
        if n["params"]["partId"] == text["id"]
    )
    assert streamed and text["text"].startswith(streamed) and text["text"].startswith("tok tok")
    assert d.call("shutdown") is None
    d.notify("exit")
    assert d.wait_exit() == 0


def test_answers_to_agentd_requests_are_not_held_behind_waiting_input(spawn, model, tmp_path):
    """A run waits on `tool/execute`; the editor stops reading, sends 60 big listings
    (more than agentd handles at once), then the tool's answer. agentd holds the listings (its output waits) but not the
    answer: the run finishes while the editor is still not reading (its tool-context file
    goes away), and everything is answered once the editor reads again."""
    d = spawn(model.base_url, initialize=False)
    init = d.initialize(workspaceRoot=str(tmp_path), capabilities={"clientTools": True})
    big_sessions(d, 100)
    session = d.call("session/create", {"title": "tools"})["session"]
    context_file = os.path.join(init["toolContextDir"], session["sessionScopeKey"] + ".json")

    def execute(params: dict[str, Any]) -> dict[str, Any]:
        d.stop_reading()
        for i in range(60):
            d.request_async("session/list", {"limit": 500}, msg_id=f"t{i}")
        return {"output": "selected: foo()"}

    d.handlers["tool/execute"] = execute
    model.enqueue(
        {"toolCalls": [{"name": "editor_selection", "arguments": {}}]},
        {"text": "You selected foo."},
    )
    chat = d.request_async(
        "session/chat",
        {
            "sessionId": session["id"],
            "parts": [{"type": "text", "text": "what did I select?"}],
            "clientTools": [
                {
                    "name": "editor_selection",
                    "description": "the selection",
                    "parameters": {"type": "object", "properties": {}},
                }
            ],
        },
    )
    d.wait_for(lambda: os.path.exists(context_file))
    # (wait_for rechecks every 0.5 s: nothing arrives while the editor is not reading)
    d.wait_for(lambda: not os.path.exists(context_file), timeout=30)
    assert not d.reading  # the run finished while the editor was still not reading

    d.resume_reading()
    seen: list[Any] = []
    d.wait_for(lambda: collect(d, "t", seen)() == 60, timeout=120)
    message = d.result(chat, timeout=30)["message"]
    assert message["finishReason"] == "stop"
    tool = next(p for p in message["parts"] if p["type"] == "tool")
    assert tool["state"]["output"] == "selected: foo()"


def test_a_flood_of_tiny_bad_frames_is_bounded_too(spawn):
    """30,000 empty frames (`Content-Length: 0`, 19 bytes each, each answered -32700)
    while the editor reads nothing: agentd stops reading them too, and once the editor
    reads again every one is answered and the next request served."""
    d = spawn()
    d.stop_reading()
    total = 30_000
    sender = threading.Thread(
        target=lambda: d.send_raw(b"Content-Length: 0\r\n\r\n" * total), daemon=True
    )
    sender.start()
    peak = settle(d.proc.pid)
    assert peak < RSS_LIMIT, f"peak RSS {peak / MiB:.0f} MiB"
    assert sender.is_alive(), "agentd read all 30,000 frames while their answers waited"

    d.resume_reading()
    errors = []

    def count() -> bool:
        errors.extend(m for m in d.messages if m.get("id") is None)
        d.messages.clear()
        return len(errors) >= total

    d.wait_for(count, timeout=120)
    sender.join(30)
    assert {e["error"]["code"] for e in errors} == {-32700}
    assert "models" in d.call("models/list", {})
