"""A title the user gives always wins over a generated one: whenever the rename lands
(before, during or after the title request), in this daemon or another, and after a
restart. A run that failed is titled with its first words, without asking the provider
that failed again."""

from __future__ import annotations

import json
import socket

import pytest
from helpers import chat
from rpc_client import Daemon, daemon_env


def title_in_log(tmp_path, sid) -> list[str]:  # type: ignore[no-untyped-def]
    import json

    log = tmp_path / "data" / "sessions" / sid / "log.jsonl"
    return [r["title"] for r in map(json.loads, log.read_text().splitlines()) if r["k"] == "title"]


@pytest.mark.parametrize(
    "where, when",
    [("same-daemon", "during-request"), ("other-daemon", "before-request")],
    ids=["same-daemon-during", "other-daemon-before"],
)
def test_a_rename_during_title_generation_wins(spawn, model, tmp_path, where, when):
    d = spawn(model.base_url)
    other = spawn(model.base_url) if where == "other-daemon" else d
    sid = d.call("session/create", {})["session"]["id"]
    # The answer, then a slow generated title.
    model.enqueue({"text": "answer"}, {"text": "Generated Title", "firstDelayMs": 800})
    if when == "before-request":
        chat_id = d.request_async(
            "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "hello"}]}
        )
        other.call("session/update", {"sessionId": sid, "title": "Mine"})
        d.result(chat_id, timeout=30)
    else:
        chat(d, sid, "hello")
        d.wait_for(lambda: len(model.requests()) >= 2)  # the title request is out
        other.call("session/update", {"sessionId": sid, "title": "Mine"})
    assert model.wait_response_end(1, timeout=30) == "completed"
    d.stop()  # waits for the title task to end
    if other is not d:
        other.stop()
    assert title_in_log(tmp_path, sid)[0] == "Mine"
    again = spawn(model.base_url)
    assert again.call("session/get", {"sessionId": sid})["session"]["title"] == "Mine"
    [listed] = again.call("session/list", {})["sessions"]
    assert listed["title"] == "Mine"
    # Rebuilt from the logs: still the user's.
    again.stop()
    (tmp_path / "data" / "catalog.sqlite3").unlink()
    rebuilt = spawn(model.base_url)
    assert rebuilt.call("session/get", {"sessionId": sid})["session"]["title"] == "Mine"


def test_a_generated_title_applies_when_the_user_gave_none(spawn, model):
    d = spawn(model.base_url)
    sid = d.call("session/create", {})["session"]["id"]
    model.enqueue({"text": "answer"}, {"text": "Generated Title"})
    chat(d, sid, "hello")
    assert model.wait_response_end(1, timeout=30) == "completed"
    d.wait_for(
        lambda: d.call("session/get", {"sessionId": sid})["session"]["title"] == "Generated Title"
    )
    # A later rename still applies, and a restart keeps it.
    d.call("session/update", {"sessionId": sid, "title": "Renamed"})
    d.stop()
    assert spawn(model.base_url).call("session/get", {"sessionId": sid})["session"]["title"] == (
        "Renamed"
    )


def test_a_generated_title_written_after_a_rename_loses_in_the_fold(tmp_path, model):
    """Records in the other order (a daemon that wrote its generated title after the
    user's rename, without seeing it): the rename still wins when the log is read."""
    import json

    d = Daemon(daemon_env(tmp_path, model.base_url))
    d.initialize(workspaceRoot=str(tmp_path))
    sid = d.call("session/create", {})["session"]["id"]
    d.call("session/update", {"sessionId": sid, "title": "Mine"})
    d.stop()
    log = tmp_path / "data" / "sessions" / sid / "log.jsonl"
    with log.open("a") as f:
        f.write(json.dumps({"k": "title", "title": "Generated", "generated": True, "at": 1}) + "\n")
    (tmp_path / "data" / "catalog.sqlite3").unlink()
    d2 = Daemon(daemon_env(tmp_path, model.base_url))
    d2.initialize(workspaceRoot=str(tmp_path))
    try:
        assert d2.call("session/get", {"sessionId": sid})["session"]["title"] == "Mine"
    finally:
        d2.stop()


def _titles_asked(model) -> int:  # type: ignore[no-untyped-def]
    return sum("short title" in json.dumps(r["body"]["messages"][0]) for r in model.requests())


def _title(d, sid: str) -> str:  # type: ignore[no-untyped-def]
    return d.call("session/get", {"sessionId": sid})["session"]["title"]


@pytest.mark.parametrize(
    "failure",
    [
        {"error": {"status": 500}, "repeat": 20},
        {"error": {"status": 401}, "repeat": 20},
        {"error": {"status": 429, "headers": {"retry-after": "0"}}, "repeat": 20},
        {"text": "cut short by the server", "chunkSize": 4, "dropAfterChunks": 2, "repeat": 20},
    ],
)
def test_after_a_model_error_the_title_is_the_first_words_at_once(spawn, model, failure):
    """The run's error was shown: the provider that failed is not asked again for a title
    (that was a second round of retries after the error, delaying the daemon's stop)."""
    d = spawn(model.base_url)
    sid = d.call("session/create", {})["session"]["id"]
    model.enqueue(failure)
    msg = chat(d, sid, "why is the sky blue on a clear day")["message"]
    assert msg["finishReason"] == "error"
    asked = len(model.requests())
    d.wait_for(lambda: _title(d, sid) == "why is the sky blue on a clear")
    d.stop()  # waits for a title still being written
    assert len(model.requests()) == asked and _titles_asked(model) == 0


def _two_models(tmp_path, run_url: str, title_url: str) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "models.toml"
    path.write_text(
        'default_model = "main"\ntitle_model = "titler"\n'
        f'[providers.run]\nbase_url = "{run_url}"\napi_key = "k"\n'
        f'[providers.titles]\nbase_url = "{title_url}"\napi_key = "k"\n'
        '[models.main]\nprovider = "run"\nname = "scripted"\n'
        f'[models.titler]\nprovider = "{"run" if run_url == title_url else "titles"}"\n'
        'name = "scripted"\n'
    )
    return str(path)


def test_a_title_model_of_another_provider_is_still_asked_after_an_error(spawn, model, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # nothing listens once closed
    d = spawn(AGENTD_CONFIG=_two_models(tmp_path, closed, model.base_url))
    sid = d.call("session/create", {})["session"]["id"]
    msg = chat(d, sid, "plan the garden for spring")["message"]
    assert msg["error"]["name"] == "ProviderUnavailable"
    d.wait_for(lambda: _title(d, sid) == "plan the garden for spring")
    assert _titles_asked(model) == 1


def test_a_title_model_of_the_failed_provider_is_not_asked(spawn, model, tmp_path):
    d = spawn(AGENTD_CONFIG=_two_models(tmp_path, model.base_url, model.base_url))
    sid = d.call("session/create", {})["session"]["id"]
    model.enqueue({"error": {"status": 503}, "repeat": 20})
    assert chat(d, sid, "plan the garden")["message"]["finishReason"] == "error"
    asked = len(model.requests())
    d.wait_for(lambda: _title(d, sid) == "plan the garden")
    d.stop()
    assert len(model.requests()) == asked and _titles_asked(model) == 0
