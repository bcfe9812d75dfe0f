"""`agentd acp` end to end: the official ACP Python SDK spawns the real daemon in ACP mode
(NDJSON on stdio), the daemon talks to the scripted model on loopback, and every message
it sends is checked against the official ACP v1 schema (tests/acp_client.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from acp import RequestError
from acp_client import acp_agent
from rpc_client import Daemon, daemon_env


def run(scenario: Any) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, 90))


@pytest.fixture
def env(tmp_path: Path, model: Any) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text(
        'default_model = "scripted"\n'
        "[providers.local]\n"
        f'base_url = "{model.base_url}"\n'
        'api_key_env = "OPENAI_API_KEY"\n'
        "[models.scripted]\n"
        'provider = "local"\n'
        "context_window = 32000\n"
        "[models.other]\n"
        'provider = "local"\n'
        'name = "upstream-other"\n'
    )
    return daemon_env(tmp_path, model.base_url, AGENTD_CONFIG=str(config))


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.txt").write_text("first line\nsecond line\n")
    return root


# --- the flows ------------------------------------------------------------------------------


def test_initialize_new_prompt_streams_text_and_answers_end_turn(env, ws, model):
    model.enqueue({"text": "Hello from the scripted model.", "chunkSize": 4, "delayMs": 5})
    context_dirs: list[str] = []

    async def scenario() -> None:
        async with acp_agent(env) as agent:
            init = await agent.call("initialize", {"protocolVersion": 7, "clientCapabilities": {}})
            assert init["protocolVersion"] == 1  # agentd's version, whatever was asked
            caps = init["agentCapabilities"]
            assert caps["loadSession"] is True
            assert caps["sessionCapabilities"] == {
                "list": {},
                "delete": {},
                "resume": {},
                "close": {},
            }
            ours = caps["_meta"]["agentd"]
            context_dirs.append(ours["toolContextDir"])
            assert "_agentd/session/messages" in ours["extMethods"]
            assert init["agentInfo"]["name"] == "agentd" and init["authMethods"] == []

            new = await agent.call("session/new", {"cwd": str(ws), "mcpServers": []})
            sid = new["sessionId"]
            assert sid.startswith("ses_")
            assert new["_meta"]["agentd"]["created"] is True
            option = new["configOptions"][0]
            assert (option["id"], option["currentValue"]) == ("model", "scripted")
            answer = await agent.prompt(sid, "hi")
            assert answer["stopReason"] == "end_turn"
            meta = answer["_meta"]["agentd"]
            assert meta["runId"].startswith("run_") and meta["messageId"].startswith("msg_")
            assert meta["finishReason"] == "stop" and meta["usage"]["outputTokens"] > 0
            assert agent.recorder.text(sid) == "Hello from the scripted model."
            chunks = agent.recorder.of("agent_message_chunk")
            assert len(chunks) > 1  # streamed, not sent whole at the end
            assert {c["messageId"] for c in chunks} == {meta["messageId"]}
            # The user's own prompt is not echoed back live.
            assert agent.recorder.of("user_message_chunk") == []
            # /compact is advertised after session/new.
            commands = agent.recorder.of("available_commands_update")
            assert commands[0]["availableCommands"][0]["name"] == "compact"
            # The context in use, against the configured window.
            usage = agent.recorder.of("usage_update")
            assert usage and usage[-1]["size"] == 32000 and usage[-1]["used"] > 0

    run(scenario())
    assert os.path.isdir(context_dirs[0])


def test_a_write_asks_permission_first_and_reports_the_diff(env, ws, model):
    model.enqueue(
        {
            "toolCalls": [
                {"name": "write_file", "arguments": {"path": "out.txt", "content": "made\n"}}
            ]
        },
        {"text": "written"},
    )

    async def scenario() -> None:
        async with acp_agent(env) as agent:
            await agent.initialize()
            sid = await agent.new_session(ws)
            answer = await agent.prompt(sid, "write it")
            assert answer["stopReason"] == "end_turn"
            [asked] = agent.recorder.permission_requests
            call = asked["toolCall"]
            assert call["kind"] == "edit" and call["rawInput"]["path"] == "out.txt"
            assert [o["optionId"] for o in asked["options"]] == [
                "allow_once",
                "allow_always",
                "reject_once",
                "reject_always",
            ]
            # The client already showed the call when it was asked.
            kinds = [
                (m.get("method"), m.get("params", {}).get("update", {}).get("sessionUpdate"))
                for m in agent.sent
            ]
            first_call = kinds.index(("session/update", "tool_call"))
            assert first_call < kinds.index(("session/request_permission", None))
            [done] = [
                u for u in agent.recorder.of("tool_call_update") if u["status"] == "completed"
            ]
            assert done["toolCallId"] == call["toolCallId"]
            diff = [c for c in done["content"] if c["type"] == "diff"]
            assert diff == [
                {"type": "diff", "path": str(ws / "out.txt"), "oldText": None, "newText": "made\n"}
            ]
            assert (ws / "out.txt").read_text() == "made\n"

    run(scenario())


@pytest.mark.parametrize(
    "answer",
    [
        {"outcome": {"outcome": "selected", "optionId": "reject_once"}},
        {"outcome": {"outcome": "cancelled"}},
        {"outcome": "yes please"},  # garbage: never a write
        {"outcome": {"outcome": "selected", "optionId": "allow_sometimes"}},
        # Not strings: an outside attacker's object made the prompt wait for ever.
        {"outcome": {"outcome": "selected", "optionId": {"kind": "allow_once"}}},
        {"outcome": {"outcome": "selected", "optionId": ["allow_once"]}},
        {"outcome": {"outcome": "selected"}},
        None,
    ],
)
def test_a_refused_or_garbled_permission_answer_writes_nothing(env, ws, model, answer):
    model.enqueue(
        {"toolCalls": [{"name": "write_file", "arguments": {"path": "out.txt", "content": "x"}}]},
        {"text": "ok"},
    )

    async def scenario() -> None:
        async with acp_agent(env) as agent:
            agent.recorder.permission = lambda _: answer
            await agent.initialize()
            sid = await agent.new_session(ws)
            result = await agent.prompt(sid, "write it")
            assert result["stopReason"] == "end_turn"  # the model reads the refusal
            updates = agent.recorder.of("tool_call_update")
            assert updates[-1]["status"] == "failed"
            assert not (ws / "out.txt").exists()

    run(scenario())


def test_a_write_that_cannot_happen_is_not_put_to_the_user(env, ws, model, tmp_path):
    """Outside the workspace, through a link out, a hard link, invalid input: refused with
    the reason, without asking; a write inside is still asked."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "out").symlink_to(outside)
    os.link(ws / "notes.txt", tmp_path / "second-name.txt")
    model.enqueue(
        {
            "toolCalls": [
                {"name": "write_file", "arguments": {"path": "../escape.txt", "content": "x"}},
                {"name": "write_file", "arguments": {"path": "out/x.txt", "content": "x"}},
                {
                    "name": "write_file",
                    "arguments": {"path": str(outside / "y.txt"), "content": "x"},
                },
                {
                    "name": "edit_file",
                    "arguments": {"path": "notes.txt", "oldString": "first", "newString": "1st"},
                },
                {"name": "write_file", "arguments": {"path": "ok.txt"}},  # no content
                {"name": "write_file", "arguments": {"path": "inside.txt", "content": "fine"}},
            ]
        },
        {"text": "done"},
    )

    async def scenario() -> None:
        async with acp_agent(env) as agent:
            await agent.initialize()
            sid = await agent.new_session(ws)
            await agent.prompt(sid, "go")
            asked = [r["toolCall"]["rawInput"]["path"] for r in agent.recorder.permission_requests]
            assert asked == ["inside.txt"]
            ends = [
                u
                for u in agent.recorder.of("tool_call_update")
                if u.get("status") in ("completed", "failed")
            ]
            assert [u["status"] for u in ends] == ["failed"] * 5 + ["completed"]
            reasons = [u["content"][0]["content"]["text"] for u in ends[:5]]
            assert "hard links" in reasons[3] and "content" in reasons[4]

    run(scenario())
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape.txt").exists()
    assert (ws / "inside.txt").read_text() == "fine"


def test_cancel_mid_stream_answers_cancelled_and_keeps_what_streamed(env, ws, model, tmp_path):
    model.enqueue({"text": " ".join(f"w{i}" for i in range(300)), "delayMs": 15})

    async def scenario() -> tuple[str, str, list[dict[str, Any]]]:
        async with acp_agent(env) as agent:
            await agent.initialize()
            sid = await agent.new_session(ws)
            prompt = asyncio.ensure_future(agent.prompt(sid, "go"))
            await agent.wait_for(lambda: len(agent.recorder.text(sid)) > 20)
            await agent.notify("session/cancel", {"sessionId": sid})
            answer = await prompt  # (how soon: bench/, "acp_cancel")
            assert answer["stopReason"] == "cancelled"
            assert answer["_meta"]["agentd"]["finishReason"] == "aborted"
            return sid, agent.recorder.text(sid), agent.recorder.updates

    sid, streamed, _ = run(scenario())
    assert 20 < len(streamed) < len(" ".join(f"w{i}" for i in range(300)))

    async def reload() -> None:
        async with acp_agent(env) as agent:
            await agent.initialize()
            loaded = await agent.call(
                "session/load", {"sessionId": sid, "cwd": str(ws), "mcpServers": []}
            )
            assert loaded == {}
            assert agent.recorder.text(sid) == streamed  # nothing lost, nothing more
            last = agent.recorder.of("agent_message_chunk")[-1]
            assert last["_meta"]["agentd"]["finishReason"] == "aborted"

    run(reload())


def test_load_in_a_second_process_replays_what_streamed(env, ws, model):
    model.enqueue(
        {"reasoning": "thinking it over", "text": "Let me read."},
        {"toolCalls": [{"name": "read_file", "arguments": {"path": "notes.txt"}}]},
        {"text": "It has two lines."},
    )
    model.enqueue({"text": "second answer"})

    async def live() -> tuple[str, list[dict[str, Any]]]:
        async with acp_agent(env) as agent:
            await agent.initialize()
            sid = await agent.new_session(ws)
            await agent.prompt(sid, "what is in notes.txt?", maxSteps=5)
            await agent.prompt(sid, "and then?")
            return sid, [u["update"] for u in agent.recorder.updates]

    sid, streamed = run(live())

    async def load() -> list[dict[str, Any]]:
        async with acp_agent(env) as agent:
            await agent.initialize()
            result = await agent.call(
                "session/load", {"sessionId": sid, "cwd": str(ws), "mcpServers": []}
            )
            assert result == {}
            return [u["update"] for u in agent.recorder.updates]

    replayed = run(load())

    def summary(updates: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """Text per kind and message, tool calls by id and final status, in order."""
        out: list[tuple[str, str]] = []
        tools: dict[str, str] = {}
        for up in updates:
            kind = up["sessionUpdate"]
            if kind in ("agent_message_chunk", "agent_thought_chunk"):
                key = f"{kind}:{up['messageId']}"
                if out and out[-1][0] == key:
                    out[-1] = (key, out[-1][1] + up["content"]["text"])
                elif up["content"]["text"]:
                    out.append((key, up["content"]["text"]))
            elif kind in ("tool_call", "tool_call_update"):
                if up["toolCallId"] not in tools:
                    out.append(("tool", up["toolCallId"]))
                tools[up["toolCallId"]] = up.get("status", tools.get(up["toolCallId"], ""))
        return out + sorted(("status:" + k, v) for k, v in tools.items())

    users = [u for u in replayed if u["sessionUpdate"] == "user_message_chunk"]
    assert [u["content"]["text"] for u in users] == ["what is in notes.txt?", "and then?"]
    assert summary(replayed) == summary(streamed)
    [call] = [u for u in replayed if u["sessionUpdate"] == "tool_call"]
    assert call["status"] == "completed" and "first line" in call["content"][0]["content"]["text"]
    assert replayed[-1]["sessionUpdate"] == "available_commands_update"


def test_sessions_made_natively_and_in_acp_mode_list_and_load_both_ways(env, ws, tmp_path, model):
    native = Daemon(env)
    try:
        native.initialize(workspaceRoot=str(ws))
        made = native.call("session/create", {"title": "native one"})["session"]
        model.enqueue({"text": "native answer"})
        native.call(
            "session/chat", {"sessionId": made["id"], "parts": [{"type": "text", "text": "q"}]}
        )
    finally:
        native.stop()
    other = tmp_path / "other"
    other.mkdir()

    async def scenario() -> str:
        async with acp_agent(env) as agent:
            await agent.initialize()
            acp_sid = await agent.new_session(other)
            listed = await agent.call("session/list", {})
            ids = [s["sessionId"] for s in listed["sessions"]]
            assert set(ids) == {made["id"], acp_sid}
            by_id = {s["sessionId"]: s for s in listed["sessions"]}
            assert (
                by_id[made["id"]]["cwd"] == str(ws) and by_id[made["id"]]["title"] == "native one"
            )
            assert by_id[made["id"]]["updatedAt"].endswith("Z")
            only = await agent.call("session/list", {"cwd": str(other)})
            assert [s["sessionId"] for s in only["sessions"]] == [acp_sid]
            await agent.call(
                "session/load", {"sessionId": made["id"], "cwd": str(ws), "mcpServers": []}
            )
            assert agent.recorder.text(made["id"]) == "native answer"
            return acp_sid

    acp_sid = run(scenario())
    native = Daemon(env)
    try:
        native.initialize(workspaceRoot=str(ws))
        got = native.call("session/get", {"sessionId": acp_sid})["session"]
        assert got["workspaceRoot"] == str(other)
    finally:
        native.stop()


def test_the_model_option_persists_and_resume_close_delete(env, ws, model):
    """The model chosen in one process is the session's: its next prompts use it, and
    another process (or the native protocol) sees it."""

    async def choose() -> str:
        async with acp_agent(env) as agent:
            await agent.initialize()
            sid = await agent.new_session(ws)
            set_to = await agent.call(
                "session/set_config_option",
                {"sessionId": sid, "configId": "model", "value": "other"},
            )
            assert set_to["configOptions"][0]["currentValue"] == "other"
            for value, code in (("gpt-nope", 1003), (5, None)):
                with pytest.raises(RequestError) as bad:
                    await agent.call(
                        "session/set_config_option",
                        {"sessionId": sid, "configId": "model", "value": value},
                    )
                assert bad.value.code == -32602
                assert code is None or bad.value.data["agentdCode"] == code
            model.enqueue({"text": "fine"})
            await agent.prompt(sid, "hi")
            assert model.requests()[-1]["body"]["model"] == "upstream-other"
            return sid

    sid = run(choose())

    async def later() -> None:
        async with acp_agent(env) as agent:
            await agent.initialize()
            resumed = await agent.call(
                "session/resume", {"sessionId": sid, "cwd": str(ws), "mcpServers": []}
            )
            assert resumed["configOptions"][0]["currentValue"] == "other"
            [info] = (await agent.call("session/list", {}))["sessions"]
            assert info["_meta"]["agentd"]["model"] == "other"
            assert await agent.call("session/close", {"sessionId": sid}) == {}
            assert await agent.call("session/delete", {"sessionId": sid}) == {}
            for method in ("session/load", "session/resume"):
                with pytest.raises(RequestError) as gone:
                    await agent.call(method, {"sessionId": sid, "cwd": str(ws), "mcpServers": []})
                assert gone.value.code == -32002 and gone.value.data["agentdCode"] == 1001

    run(later())


def test_with_fs_offered_the_tools_read_and_write_the_editors_buffers(env, ws, model, tmp_path):
    """read_file sees the buffer's unsaved text, write_file and edit_file change the
    buffer (the disk stays as it was, the editor saves); paths are confined before the
    editor is asked: a link out of the workspace and ../ are refused, never asked."""
    outside = tmp_path / "outside.txt"
    outside.write_text("OUTSIDE\n")
    (ws / "link.txt").symlink_to(outside)
    os.link(outside, ws / "hard.txt")  # its bytes are the outside file's
    model.enqueue(
        {
            "toolCalls": [
                {"name": "read_file", "arguments": {"path": "notes.txt", "offset": 2}},
                {"name": "write_file", "arguments": {"path": "new.txt", "content": "fresh\n"}},
                {
                    "name": "edit_file",
                    "arguments": {
                        "path": "notes.txt",
                        "oldString": "unsaved",
                        "newString": "edited",
                    },
                },
                {"name": "read_file", "arguments": {"path": "link.txt"}},
                {"name": "read_file", "arguments": {"path": "../outside.txt"}},
                {"name": "read_file", "arguments": {"path": "hard.txt"}},
                {
                    "name": "edit_file",
                    "arguments": {"path": "hard.txt", "oldString": "OUTSIDE", "newString": "PWNED"},
                },
                {"name": "write_file", "arguments": {"path": "hard.txt", "content": "PWNED"}},
            ]
        },
        {"text": "done"},
    )

    async def scenario() -> None:
        async with acp_agent(env) as agent:
            notes = str(ws / "notes.txt")
            agent.recorder.buffers[notes] = "first line\nunsaved second line\nthird\n"
            await agent.initialize(fs={"readTextFile": True, "writeTextFile": True})
            sid = await agent.new_session(ws)
            assert (await agent.prompt(sid, "go"))["stopReason"] == "end_turn"
            done = {
                u["toolCallId"]: u
                for u in agent.recorder.of("tool_call_update")
                if u["status"] in ("completed", "failed")
            }
            outputs = [u["content"][0]["content"]["text"] for u in done.values()]
            assert "    2\tunsaved second line" in outputs[0] and "first line" not in outputs[0]
            assert agent.recorder.buffers[str(ws / "new.txt")] == "fresh\n"
            assert agent.recorder.buffers[notes] == "first line\nedited second line\nthird\n"
            statuses = [u["status"] for u in done.values()]
            assert statuses == ["completed", "completed", "completed"] + ["failed"] * 5
            asked = {params["path"] for _, params in agent.recorder.fs_calls}
            assert asked == {notes, str(ws / "new.txt")}

    run(scenario())
    assert not (ws / "new.txt").exists()  # the editor's buffer, not the disk
    assert (ws / "notes.txt").read_text() == "first line\nsecond line\n"
    assert outside.read_text() == "OUTSIDE\n"


def test_with_a_terminal_offered_commands_run_there_after_asking(env, ws, model):
    """bash goes to terminal/create (bash -c, the session's root, agentd's two variables
    and nothing of its own environment), the tool call shows the terminal while it runs,
    the output and exit code reach the model, the terminal is released; a command that
    outlasts its timeout is killed there."""
    model.enqueue(
        {
            "toolCalls": [
                {
                    "name": "bash",
                    "arguments": {
                        "command": "echo hello; pwd; echo key=$AGENTD_SESSION_SCOPE_KEY; echo api=$OPENAI_API_KEY; exit 3"
                    },
                }
            ]
        },
        {"toolCalls": [{"name": "bash", "arguments": {"command": "sleep 600", "timeoutMs": 300}}]},
        {"text": "done"},
    )

    async def scenario() -> None:
        async with acp_agent(env) as agent:
            await agent.initialize(terminal=True)
            sid = await agent.new_session(ws)
            agent.recorder.hang = lambda params: "sleep" in params["args"][1]
            assert (await agent.prompt(sid, "run", maxSteps=2))["stopReason"] == "max_turn_requests"
            [create, *_] = [p for m, p in agent.recorder.terminal_calls if m == "terminal/create"]
            assert create["command"] == "bash" and create["args"][0] == "-c"
            assert create["cwd"] == str(ws)
            names = {e["name"] for e in create["env"]}
            assert names == {"AGENTD_SESSION_SCOPE_KEY", "AGENTD_TOOL_CONTEXT_DIR"}
            assert len(agent.recorder.permission_requests) == 2  # asked every time
            updates = agent.recorder.of("tool_call_update")
            shown = [u for u in updates if "status" not in u and u.get("content")]
            assert shown and shown[0]["content"] == [{"type": "terminal", "terminalId": "term-0"}]
            done = [u for u in updates if u.get("status") in ("completed", "failed")]
            output = done[0]["content"][1]["content"]["text"]
            assert "hello" in output and str(ws) in output and "[exit code 3]" in output
            assert "key=" in output and "api=\n" in output + "\n"  # the key is not there
            assert "sk-test-key" not in output
            methods = [m for m, _ in agent.recorder.terminal_calls]
            assert methods[:4] == [
                "terminal/create",
                "terminal/wait_for_exit",
                "terminal/output",
                "terminal/release",
            ]
            assert "terminal/kill" in methods[4:]  # the second command timed out
            assert "timed out" in done[1]["content"][-1]["content"]["text"]

    run(scenario())


def test_refusing_unconfined_commands_keeps_them_in_agentds_sandbox(env, ws, model, tmp_path):
    config = Path(env["AGENTD_CONFIG"])
    config.write_text(config.read_text() + '[sandbox]\nunconfined = "refuse"\n')
    model.enqueue(
        {"toolCalls": [{"name": "bash", "arguments": {"command": "echo inside"}}]}, {"text": "ok"}
    )

    async def scenario() -> None:
        async with acp_agent(env) as agent:
            await agent.initialize(terminal=True)
            sid = await agent.new_session(ws)
            await agent.prompt(sid, "run")
            assert agent.recorder.terminal_calls == []
            done = [
                u for u in agent.recorder.of("tool_call_update") if u.get("status") == "completed"
            ]
            assert "inside" in done[0]["content"][0]["content"]["text"]

    run(scenario())


def test_prompts_sent_during_a_turn_queue_and_cancel_answers_them_all(env, ws, model):
    model.enqueue({"text": "one two three", "delayMs": 5}, {"text": "second answer"})

    async def scenario() -> None:
        async with acp_agent(env) as agent:
            await agent.initialize()
            sid = await agent.new_session(ws)
            order: list[str] = []

            async def prompt(text: str) -> dict[str, Any]:
                answer = await agent.prompt(sid, text)
                order.append(text)
                return answer

            first, second = await asyncio.gather(prompt("a"), prompt("b"))
            assert (first["stopReason"], second["stopReason"]) == ("end_turn", "end_turn")
            assert order == ["a", "b"]
            assert agent.recorder.text(sid) == "one two threesecond answer"
            # reject: the second is refused while the first runs.
            model.enqueue({"text": " ".join(["slow"] * 300), "delayMs": 10})
            slow = asyncio.ensure_future(agent.prompt(sid, "c"))
            await agent.wait_for(lambda: "slow" in agent.recorder.text(sid))
            with pytest.raises(RequestError) as busy:
                await agent.prompt(sid, "d", onBusy="reject")
            assert busy.value.code == 1002 and busy.value.data["runId"].startswith("run_")
            prompts = agent.requests_out.count("session/prompt")
            queued = asyncio.ensure_future(agent.prompt(sid, "e"))
            await agent.wait_for(lambda: agent.requests_out.count("session/prompt") > prompts)
            await agent.notify("session/cancel", {"sessionId": sid})
            assert (await slow)["stopReason"] == "cancelled"
            assert (await queued)["stopReason"] == "cancelled"

    run(scenario())


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ({"error": {"status": 401}}, "ProviderAuthError"),
        (
            {"text": "partial answer that breaks", "dropAfterChunks": 2, "chunkSize": 5},
            "StreamInterrupted",
        ),
    ],
)
def test_a_provider_failure_is_the_prompts_error_and_what_streamed_is_kept(
    env, ws, model, spec, name
):
    model.enqueue(spec)

    async def scenario() -> tuple[str, str]:
        async with acp_agent(env) as agent:
            await agent.initialize()
            sid = await agent.new_session(ws)
            with pytest.raises(RequestError) as failed:
                await agent.prompt(sid, "hi")
            error = failed.value
            assert error.code == -32603
            assert error.data["name"] == name and error.data["runId"].startswith("run_")
            assert error.data["messageId"].startswith("msg_")
            return sid, agent.recorder.text(sid)

    sid, streamed = run(scenario())

    async def reload() -> None:
        async with acp_agent(env) as agent:
            await agent.initialize()
            await agent.call("session/load", {"sessionId": sid, "cwd": str(ws), "mcpServers": []})
            assert agent.recorder.text(sid) == streamed
            last = agent.recorder.of("agent_message_chunk")[-1]
            assert last["_meta"]["agentd"]["finishReason"] == "error"
            assert last["_meta"]["agentd"]["error"]["name"] == name

    run(reload())


def test_compact_files_and_refused_content(env, ws, model):
    model.enqueue({"text": "first answer"})
    model.enqueue({"text": "The summary of it all."})

    async def scenario() -> None:
        async with acp_agent(env) as agent:
            await agent.initialize()
            sid = await agent.new_session(ws)
            linked = {
                "sessionId": sid,
                "prompt": [
                    {"type": "text", "text": "look at"},
                    {
                        "type": "resource_link",
                        "uri": (ws / "notes.txt").as_uri(),
                        "name": "notes.txt",
                    },
                    {"type": "resource_link", "uri": "https://example.com/x", "name": "x"},
                ],
            }
            assert (await agent.call("session/prompt", linked))["stopReason"] == "end_turn"
            sent = json.dumps(model.requests()[-1]["body"]["messages"])
            assert "first line" in sent and "https://example.com/x" in sent
            compact = await agent.prompt(sid, "/compact")
            assert compact["stopReason"] == "end_turn"
            chunks = [c for c in agent.recorder.of("agent_message_chunk") if c.get("_meta")]
            assert "".join(c["content"]["text"] for c in chunks) == "The summary of it all."
            assert all(c["_meta"]["agentd"]["summary"] is True for c in chunks)
            for block in (
                {"type": "image", "data": "AAAA", "mimeType": "image/png"},
                {"type": "audio", "data": "AAAA", "mimeType": "audio/wav"},
                {"type": "resource", "resource": {"uri": "file:///x", "text": "x"}},
            ):
                with pytest.raises(RequestError) as refused:
                    await agent.call("session/prompt", {"sessionId": sid, "prompt": [block]})
                assert refused.value.code == -32602 and block["type"] in str(refused.value)
            # Outside the root: refused as natively, nothing sent.
            outside = {
                "sessionId": sid,
                "prompt": [{"type": "resource_link", "uri": "file:///etc/hostname", "name": "h"}],
            }
            with pytest.raises(RequestError) as out:
                await agent.call("session/prompt", outside)
            assert out.value.code == -32602

    run(scenario())


def test_client_tools_and_known_threads(env, ws, model):
    model.enqueue(
        {"toolCalls": [{"name": "editor_selection", "arguments": {}}]},
        {"text": "got it"},
    )

    async def scenario() -> None:
        async with acp_agent(env) as agent:
            await agent.call(
                "initialize",
                {
                    "protocolVersion": 1,
                    "clientCapabilities": {"_meta": {"agentd": {"clientTools": True}}},
                },
            )
            sid = await agent.new_session(ws, clientSessionId="thread-9", userId="ann")
            tool = {
                "name": "editor_selection",
                "description": "the selection",
                "parameters": {"type": "object", "properties": {}},
            }
            await agent.prompt(sid, "what is selected?", clientTools=[tool])
            [(_, params)] = [e for e in agent.recorder.ext if e[0] == "_agentd/tool/execute"]
            assert params["name"] == "editor_selection" and params["sessionId"] == sid
            done = [
                u for u in agent.recorder.of("tool_call_update") if u.get("status") == "completed"
            ]
            assert done[0]["content"][0]["content"]["text"].startswith("ran editor_selection for ")
            again = await agent.call(
                "session/new",
                {
                    "cwd": str(ws),
                    "mcpServers": [],
                    "_meta": {"agentd": {"clientSessionId": "thread-9", "userId": "ann"}},
                },
            )
            assert again["sessionId"] == sid and again["_meta"]["agentd"]["created"] is False

    run(scenario())


@pytest.mark.parametrize("opted_in", [True, False])
def test_retry_status_reaches_only_clients_that_opted_in(env, ws, model, opted_in):
    model.enqueue(
        {"error": {"status": 429, "headers": {"retry-after": "0"}}}, {"text": "after a retry"}
    )

    async def scenario() -> None:
        async with acp_agent(env) as agent:
            caps: dict[str, Any] = (
                {"_meta": {"agentd": {"notifications": True}}} if opted_in else {}
            )
            await agent.call("initialize", {"protocolVersion": 1, "clientCapabilities": caps})
            sid = await agent.new_session(ws)
            assert (await agent.prompt(sid, "hi"))["stopReason"] == "end_turn"
            assert agent.recorder.text(sid) == "after a retry"
            statuses = [p for m, p in agent.recorder.ext if m == "_agentd/session/status"]
            if opted_in:
                assert statuses and statuses[0]["status"] == "retry"
                assert statuses[0]["sessionId"] == sid and statuses[0]["attempt"] == 1
            else:
                assert statuses == []

    run(scenario())


def test_with_no_model_configured_it_answers_offline_with_the_scripted_model(tmp_path, ws):
    """As `agentd chat` does: the newcomer's first prompt gets an answer, and stderr says
    why (no API key anywhere)."""
    env = daemon_env(tmp_path)  # no model, no base URL, no key
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentd", "acp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        init = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1}}\n'
        exchange(proc, init, answers=1)
        new = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "session/new",
            "params": {"cwd": str(ws), "mcpServers": []},
        }
        [created] = exchange(proc, json.dumps(new).encode() + b"\n", answers=1)
        sid = created["result"]["sessionId"]
        assert created["result"]["configOptions"][0]["currentValue"] == "scripted"
        prompt = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "session/prompt",
            "params": {"sessionId": sid, "prompt": [{"type": "text", "text": "hello there"}]},
        }
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(prompt).encode() + b"\n")
        proc.stdin.flush()
        text = ""
        while True:
            message = json.loads(proc.stdout.readline())
            update = message.get("params", {}).get("update", {})
            if update.get("sessionUpdate") == "agent_message_chunk":
                text += update["content"]["text"]
            if message.get("id") == 3:
                break
        assert message["result"]["stopReason"] == "end_turn" and text
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        assert b"no model configured" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


# --- bad input --------------------------------------------------------------------------------


def raw_agent(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentd", "acp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, **env},
    )


def exchange(proc: subprocess.Popen[bytes], *lines: bytes, answers: int) -> list[dict[str, Any]]:
    assert proc.stdin is not None and proc.stdout is not None
    for line in lines:
        proc.stdin.write(line)
    proc.stdin.flush()
    return [json.loads(proc.stdout.readline()) for _ in range(answers)]


def test_junk_unknown_methods_and_requests_before_initialize(env, ws):
    proc = raw_agent(env)
    try:
        before = exchange(
            proc,
            b'{"jsonrpc":"2.0","id":1,"method":"session/new","params":{"cwd":"/tmp","mcpServers":[]}}\n',
            answers=1,
        )
        assert before[0]["error"]["code"] == -32600 and before[0]["id"] == 1
        got = exchange(
            proc,
            b"this is not json\n",
            b'{"jsonrpc":"2.0","id":2,"method":"initialize","params":{"protocolVersion":1}}\n',
            b'{"jsonrpc":"2.0","id":3,"method":"session/fork","params":{}}\n',
            b'{"jsonrpc":"2.0","id":4,"method":"session/prompt","params":{"sessionId":"ses_nope","prompt":[]}}\n',
            b'{"jsonrpc":"2.0","id":5,"method":"session/new","params":{"cwd":"relative/dir","mcpServers":[]}}\n',
            b'{"jsonrpc":"2.0","id":6,"method":"session/new","params":{"cwd":5}}\n',
            b'{"jsonrpc":"2.0","id":7,"method":"session/new","params":{"cwd":"/tmp/a\\u0000b"}}\n',
            answers=7,
        )
        by_id = {m.get("id"): m for m in got}
        assert by_id[None]["error"]["code"] == -32700
        assert by_id[2]["result"]["protocolVersion"] == 1
        assert by_id[3]["error"]["code"] == -32601  # unstable: not advertised, not served
        assert by_id[4]["error"]["code"] == -32002
        assert by_id[4]["error"]["data"] == {"sessionId": "ses_nope", "agentdCode": 1001}
        assert by_id[5]["error"]["code"] == -32602 and "absolute" in by_id[5]["error"]["message"]
        assert by_id[6]["error"]["code"] == -32602 and "cwd" in by_id[6]["error"]["message"]
        assert by_id[7]["error"]["code"] == -32602 and "NUL" in by_id[7]["error"]["message"]
        # A line of 40 MiB (over the native 32 MiB frame limit) is read: ACP's is 50 MiB.
        big = {
            "jsonrpc": "2.0",
            "id": 8,
            "method": "session/list",
            "params": {"_meta": {"pad": "x" * (40 << 20)}},
        }
        [listed] = exchange(proc, json.dumps(big).encode() + b"\n", answers=1)
        assert listed["id"] == 8 and "sessions" in listed["result"]
    finally:
        proc.kill()
        proc.wait()


def test_end_of_input_mid_run_persists_releases_and_exits_0(env, ws, model, tmp_path):
    model.enqueue({"text": " ".join(["slow"] * 400), "delayMs": 20})
    proc = raw_agent(env)
    assert proc.stdin is not None and proc.stdout is not None
    init = exchange(
        proc,
        b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1}}\n',
        answers=1,
    )
    context_dir = Path(init[0]["result"]["agentCapabilities"]["_meta"]["agentd"]["toolContextDir"])
    new = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "session/new",
            "params": {"cwd": str(ws), "mcpServers": []},
        }
    )
    sid = exchange(proc, new.encode() + b"\n", answers=1)[0]["result"]["sessionId"]
    prompt = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "session/prompt",
        "params": {"sessionId": sid, "prompt": [{"type": "text", "text": "go"}]},
    }
    proc.stdin.write(json.dumps(prompt).encode() + b"\n")
    proc.stdin.flush()
    streamed = ""
    while len(streamed) < 30:
        message = json.loads(proc.stdout.readline())
        update = message.get("params", {}).get("update", {})
        if update.get("sessionUpdate") == "agent_message_chunk":
            streamed += update["content"]["text"]
    assert list(context_dir.glob("*.json"))  # the run's tool-context file
    closed_at = time.monotonic()
    proc.stdin.close()
    rest = proc.stdout.read()
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - closed_at < 5.0
    for line in rest.splitlines():
        message = json.loads(line)  # nothing but protocol lines
        if message.get("id") == 3:
            assert message["result"]["stopReason"] == "cancelled"
    assert not list(context_dir.glob("*.json"))
    native = Daemon(env)
    try:
        native.initialize(workspaceRoot=str(ws))
        [_, answer] = native.call("session/messages", {"sessionId": sid})["messages"]
        text = "".join(p["text"] for p in answer["parts"] if p["type"] == "text")
        assert answer["finishReason"] == "aborted" and text.startswith(streamed)
    finally:
        native.stop()


def test_a_cancel_right_behind_its_prompt_in_one_write_cancels_it(env, ws, model):
    """The prompt and the cancel arrive in one read: the prompt has not taken a step
    when the cancel is dispatched, and is still answered cancelled (not run)."""
    model.enqueue({"text": " ".join(["late"] * 100), "delayMs": 10})
    proc = raw_agent(env)
    try:
        exchange(
            proc,
            b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1}}\n',
            answers=1,
        )
        new = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "session/new",
            "params": {"cwd": str(ws), "mcpServers": []},
        }
        got = exchange(proc, json.dumps(new).encode() + b"\n", answers=1)
        sid = got[0]["result"]["sessionId"]
        prompt = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "session/prompt",
            "params": {"sessionId": sid, "prompt": [{"type": "text", "text": "x"}]},
        }
        cancel = {"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": sid}}
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(prompt).encode() + b"\n" + json.dumps(cancel).encode() + b"\n")
        proc.stdin.flush()
        while True:
            message = json.loads(proc.stdout.readline())
            if message.get("id") == 3:
                break
        assert message["result"]["stopReason"] == "cancelled"
    finally:
        proc.kill()
        proc.wait()


def test_cancel_while_a_permission_request_is_unanswered(env, ws, model):
    model.enqueue(
        {"toolCalls": [{"name": "bash", "arguments": {"command": "echo hi"}}]},
        {"text": "never"},
    )
    never: asyncio.Future[Any] | None = None

    async def scenario() -> None:
        nonlocal never
        async with acp_agent(env) as agent:
            never = asyncio.get_running_loop().create_future()
            agent.recorder.permission = lambda _: never
            await agent.initialize()
            sid = await agent.new_session(ws)
            prompt = asyncio.ensure_future(agent.prompt(sid, "run it"))
            await agent.wait_for(lambda: bool(agent.recorder.permission_requests))
            await agent.notify("session/cancel", {"sessionId": sid})
            answer = await prompt
            assert answer["stopReason"] == "cancelled"
            # agentd withdrew its own request, as in the spec's cascading example.
            cancels = [m for m in agent.sent if m.get("method") == "$/cancel_request"]
            assert cancels and cancels[0]["params"]["requestId"]
            failed = [u for u in agent.recorder.of("tool_call_update") if u["status"] == "failed"]
            assert failed and failed[-1]["_meta"]["agentd"]["error"] == "aborted"

    run(scenario())


def test_access_tokens_never_reach_the_wire_or_disk(env, ws, model, tmp_path):
    token = "tok-ACP-SECRET-1234567890"
    model.enqueue({"text": "fine"})

    async def scenario() -> None:
        async with acp_agent(env) as agent:
            await agent.initialize()
            sid = await agent.new_session(
                ws, accessToken=token, userId="u1", clientSessionId="thread-1"
            )
            await agent.prompt(sid, "hi")
            await agent.call("session/list", {})
            found = await agent.call(
                "_agentd/session/resolve", {"clientSessionId": "thread-1", "userId": "u1"}
            )
            assert found == {"sessionId": sid}
            assert token not in json.dumps(agent.sent)

    run(scenario())
    for path in tmp_path.rglob("*"):
        if path.is_file() and "node_modules" not in path.parts:
            assert token.encode() not in path.read_bytes(), path
