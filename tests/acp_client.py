"""Driving `agentd acp` with the official ACP Python SDK (`agent-client-protocol`), and
checking every message agentd sends against the official ACP v1 JSON schema (from the
TypeScript SDK package, pinned in tests/acp/package.json).

`AcpRun` spawns the real daemon (`python -m agentd acp`) through the SDK's own process
helper, answers its requests as an editor would (permission by a policy, fs and terminal
not offered), and records what it sent. The schema check happens as messages arrive:
each one is validated against its spec type (a response against the response type of
the request it answers), and no spec object may carry a key of its own outside `_meta`
("Implementations MUST NOT add any custom fields at the root of a type that's part of
the specification").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import acp
import jsonschema_rs
from acp.connection import StreamDirection, StreamEvent

SCHEMA_PATH = (
    Path(__file__).parent / "acp/node_modules/@agentclientprotocol/sdk/schema/v1/schema.json"
)

# The spec type of the result of each request the client sends.
RESULT_TYPES = {
    "initialize": "InitializeResponse",
    "session/new": "NewSessionResponse",
    "session/load": "LoadSessionResponse",
    "session/resume": "ResumeSessionResponse",
    "session/list": "ListSessionsResponse",
    "session/prompt": "PromptResponse",
    "session/delete": "DeleteSessionResponse",
    "session/close": "CloseSessionResponse",
    "session/set_config_option": "SetSessionConfigOptionResponse",
}
TERMINAL_TYPES = {
    "create": "CreateTerminalRequest",
    "wait_for_exit": "WaitForTerminalExitRequest",
    "output": "TerminalOutputRequest",
    "kill": "KillTerminalRequest",
    "release": "ReleaseTerminalRequest",
}
# The spec type of the params of each method agentd sends.
PARAMS_TYPES = {
    "session/update": "SessionNotification",
    "session/request_permission": "RequestPermissionRequest",
    "$/cancel_request": "CancelRequestNotification",
}


class SchemaCheck:
    """Validates values against the ACP v1 schema's types, strictly (see the module)."""

    def __init__(self) -> None:
        if not SCHEMA_PATH.exists():
            raise RuntimeError(f"{SCHEMA_PATH} is missing: run `make dev` (npm ci in tests/acp)")
        self.schema = json.loads(SCHEMA_PATH.read_text())
        self.defs = self.schema["$defs"]
        self._validators: dict[str, Any] = {}

    def _validator(self, node: dict[str, Any]) -> Any:
        key = json.dumps(node, sort_keys=True)
        if key not in self._validators:
            whole = {"$schema": self.schema["$schema"], "$defs": self.defs, **node}
            self._validators[key] = jsonschema_rs.validator_for(whole)
        return self._validators[key]

    def check(self, type_name: str, value: Any) -> None:
        node = {"$ref": f"#/$defs/{type_name}"}
        errors = [
            f"{e.instance_path}: {e.message}" for e in self._validator(node).iter_errors(value)
        ]
        assert not errors, f"{type_name} invalid: {errors[:5]} in {json.dumps(value)[:1500]}"
        extra = self._extra_keys(node, value, "")
        assert not extra, f"{type_name}: custom fields outside _meta: {extra}"

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.defs[node["$ref"].rsplit("/", 1)[1]]
        return node

    def _branches(self, node: dict[str, Any], value: Any) -> list[dict[str, Any]]:
        """The parts of `node` that apply to `value`: itself, its allOf, and the oneOf /
        anyOf branches it validates against (recursively)."""
        node = self._resolve(node)
        out = [node]
        for sub in node.get("allOf", []):
            out += self._branches(sub, value)
        for key in ("oneOf", "anyOf"):
            for sub in node.get(key, []):
                if self._validator(sub).is_valid(value):
                    out += self._branches(sub, value)
        return out

    def _extra_keys(self, node: dict[str, Any], value: Any, path: str) -> list[str]:
        branches = self._branches(node, value)
        extra: list[str] = []
        if isinstance(value, dict):
            props: dict[str, Any] = {}
            open_object = False
            for b in branches:
                props.update(b.get("properties", {}))
                if b.get("additionalProperties") not in (None, False) and not b.get("properties"):
                    open_object = True  # a free-form object (such as _meta itself)
            if props and not open_object:
                extra += [f"{path}/{k}" for k in value if k not in props]
            for k, v in value.items():
                if k in props and k != "_meta":
                    extra += self._extra_keys(props[k], v, f"{path}/{k}")
        elif isinstance(value, list):
            for b in branches:
                if "items" in b and isinstance(b["items"], dict):
                    for i, item in enumerate(value):
                        extra += self._extra_keys(b["items"], item, f"{path}/{i}")
                    break
        return extra


class Recorder:
    """The editor side: records session updates, answers permission requests with
    `permission` (a callable taking the request's params, returning the outcome), and
    every other message agentd sends."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.permission_requests: list[dict[str, Any]] = []
        self.permission: Callable[[dict[str, Any]], Any] = lambda _: {
            "outcome": {"outcome": "selected", "optionId": "allow_once"}
        }
        self.ext: list[tuple[str, dict[str, Any]]] = []
        # The editor's buffers (fs/*, when offered): path -> text; fs calls in order.
        self.buffers: dict[str, str] = {}
        self.fs_calls: list[tuple[str, dict[str, Any]]] = []
        # The editor's terminals (terminal/*, when offered): id -> the finished process's
        # (output, exit code); requests in order. The commands `hang` picks never end
        # (their wait_for_exit never answers).
        self.terminals: dict[str, tuple[str, int]] = {}
        self.terminal_calls: list[tuple[str, dict[str, Any]]] = []
        self.hang: Callable[[dict[str, Any]], bool] = lambda _: False
        self.hanging: set[str] = set()
        self.changed = asyncio.Event()

    async def request_permission(
        self, options: Any, session_id: str, tool_call: Any, **kw: Any
    ) -> Any:
        raise AssertionError("handled by the raw handler")  # see AcpRun._route

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.changed.set()

    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.ext.append((method, params))
        return {}

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        self.ext.append((method, params))

    def text(self, session_id: str | None = None, kind: str = "agent_message_chunk") -> str:
        return "".join(
            u["update"]["content"].get("text", "")
            for u in self.updates
            if u["update"]["sessionUpdate"] == kind
            and (session_id is None or u["sessionId"] == session_id)
        )

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [u["update"] for u in self.updates if u["update"]["sessionUpdate"] == kind]


class AcpRun:
    """One `agentd acp` process and the SDK's client connection to it. Raw requests go
    through `call`, so that tests see agentd's own JSON (the SDK's typed helpers drop
    `_meta` fields they do not model)."""

    def __init__(self, conn: acp.ClientSideConnection, process: Any, recorder: Recorder) -> None:
        self.conn = conn
        self.process = process
        self.recorder = recorder
        self.raw = conn._conn  # the SDK's JSON-RPC connection: send_request, send_notification
        self.sent: list[dict[str, Any]] = []  # everything agentd wrote
        self.requests_out: list[str] = []  # the methods of the requests sent to agentd

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        return await self.raw.send_request(method, params)

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        await self.raw.send_notification(method, params)

    async def initialize(self, **caps: Any) -> dict[str, Any]:
        return dict(
            await self.call(
                "initialize",
                {
                    "protocolVersion": 1,
                    "clientCapabilities": {
                        "fs": {"readTextFile": False, "writeTextFile": False},
                        "terminal": False,
                        **caps,
                    },
                    "clientInfo": {"name": "agentd-tests", "version": "1"},
                },
            )
        )

    async def new_session(self, cwd: Path, **agentd: Any) -> str:
        """A session with a title, unless given: a generated one would take the next
        scripted answer meant for the run."""
        params: dict[str, Any] = {"cwd": str(cwd), "mcpServers": []}
        params["_meta"] = {"agentd": {"title": "test", **agentd}}
        return str((await self.call("session/new", params))["sessionId"])

    async def prompt(self, session_id: str, text: str, **agentd: Any) -> dict[str, Any]:
        params: dict[str, Any] = {
            "sessionId": session_id,
            "prompt": [{"type": "text", "text": text}],
        }
        if agentd:
            params["_meta"] = {"agentd": agentd}
        return dict(await self.call("session/prompt", params))

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 30.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                self.recorder.changed.clear()
                await self.recorder.changed.wait()


@contextlib.asynccontextmanager
async def acp_agent(env: dict[str, str], cwd: Path | None = None) -> AsyncIterator[AcpRun]:
    """Spawn `agentd acp` with `env`; every message it sends is schema-checked."""
    check = SchemaCheck()
    recorder = Recorder()
    pending: dict[Any, str] = {}
    run: AcpRun | None = None

    def observe(event: StreamEvent) -> None:
        message = event.message
        if event.direction == StreamDirection.OUTGOING:
            if "method" in message and "id" in message:
                pending[message["id"]] = message["method"]
                assert run is not None
                run.requests_out.append(message["method"])
                recorder.changed.set()
            return
        assert run is not None
        run.sent.append(message)
        if "method" in message:
            method = message["method"]
            if method == "session/update":
                recorder.updates.append(message["params"])
                recorder.changed.set()
            if method in PARAMS_TYPES:
                check.check(PARAMS_TYPES[method], message["params"])
            else:
                assert method.startswith(("_agentd/", "fs/", "terminal/")), f"agentd sent {method}"
        elif "id" in message:
            method = pending.pop(message["id"], "")
            if "result" in message and method in RESULT_TYPES:
                check.check(RESULT_TYPES[method], message["result"])
            if "error" in message:
                check.check("Error", message["error"])

    full_env = {**env, "PYTHONPATH": str(Path(__file__).parent.parent)}
    async with acp.spawn_agent_process(
        recorder,
        sys.executable,
        "-m",
        "agentd",
        "acp",
        env=full_env,
        cwd=cwd,
        observers=[observe],
    ) as (conn, process):
        run = AcpRun(conn, process, recorder)
        # Permission requests answered here, by the raw params (the SDK's typed route
        # would drop agentd's _meta and hide what was sent).
        router = conn._conn._handler

        async def handler(method: str, params: Any, is_notification: bool) -> Any:
            if method == "session/request_permission":
                recorder.permission_requests.append(params)
                recorder.changed.set()
                answer = recorder.permission(params)
                if asyncio.isfuture(answer) or asyncio.iscoroutine(answer):
                    return await answer
                return answer
            if method == "fs/read_text_file":
                recorder.fs_calls.append((method, params))
                recorder.changed.set()
                check.check("ReadTextFileRequest", params)
                if params["path"] not in recorder.buffers:
                    raise acp.RequestError(-32002, "no such buffer", {"path": params["path"]})
                lines = recorder.buffers[params["path"]].splitlines(keepends=True)
                start = (params.get("line") or 1) - 1
                end = start + params["limit"] if params.get("limit") else None
                return {"content": "".join(lines[start:end])}
            if is_notification and method.startswith("_agentd/"):
                recorder.ext.append((method, params))
                recorder.changed.set()
                return None
            if method == "_agentd/tool/execute":
                recorder.ext.append((method, params))
                return {"output": f"ran {params['name']} for {params['sessionScopeKey']}"}
            if method.startswith("terminal/"):
                recorder.terminal_calls.append((method, params))
                recorder.changed.set()
                return await terminal(method, params)
            if method == "fs/write_text_file":
                recorder.fs_calls.append((method, params))
                check.check("WriteTextFileRequest", params)
                recorder.buffers[params["path"]] = params["content"]
                return {}
            return await router(method, params, is_notification)

        async def terminal(method: str, params: Any) -> Any:
            kind = method.split("/", 1)[1]
            check.check(TERMINAL_TYPES[kind], params)
            if kind == "create" and recorder.hang(params):  # a command that never ends
                terminal_id = f"term-{len(recorder.terminals)}"
                recorder.terminals[terminal_id] = ("", 0)
                recorder.hanging.add(terminal_id)
                return {"terminalId": terminal_id}
            if kind == "create":
                env = {**os.environ, **{e["name"]: e["value"] for e in params.get("env", [])}}
                proc = await asyncio.create_subprocess_exec(
                    params["command"],
                    *params.get("args", []),
                    cwd=params.get("cwd"),
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                out, _ = await proc.communicate()
                terminal_id = f"term-{len(recorder.terminals)}"
                recorder.terminals[terminal_id] = (out.decode(), proc.returncode or 0)
                return {"terminalId": terminal_id}
            output, code = recorder.terminals[params["terminalId"]]
            hanging = params["terminalId"] in recorder.hanging
            if kind == "wait_for_exit":
                if hanging:
                    await asyncio.Event().wait()
                return {"exitCode": code}
            if kind == "output":  # how it ended is wait_for_exit's to say
                return {"output": output, "truncated": False}
            return {}

        conn._conn._handler = handler
        yield run
