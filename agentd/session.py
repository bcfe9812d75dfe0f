"""SessionManager: sessions, their history, runs, and the lookups editors need.

The server's handlers call one method here each. Notifications and requests to the
editor go out through the `EditorLink` the server passes in; this module never sees
JSON-RPC.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, cast

import attrs

from agentd import file_modes, ids, keys
from agentd.config import Config, McpServerSpec, mcp_server_spec
from agentd.errors import (
    InvalidParams,
    ModelNotConfigured,
    SessionBusy,
    SessionNotFound,
)
from agentd.mcp_servers import McpServers
from agentd.protocol import types as t
from agentd.protocol.converter import structure, unstructure
from agentd.sandbox import SandboxProbe, SandboxStatus
from agentd.storage.catalog import DEFAULT_TITLE, Catalog
from agentd.storage.log import LOG_NAME, LogState, SessionLog, lock_is_free
from agentd.storage.reindex import reindex_sync
from agentd.toolctx import ToolContextStore

logger = logging.getLogger(__name__)

LIST_DEFAULT, LIST_MAX = 50, 500
LOG_CACHE = 16
RUN_CACHE = 10_000
MESSAGES_DEFAULT = 100
# session/create's tries when the clientSessionId it lost to is deleted before it is read.
CREATE_ATTEMPTS = 5


class EditorLink(Protocol):
    """How the session layer talks to the editor (implemented by the server)."""

    def notify(self, method: str, params: dict[str, Any]) -> None: ...

    def request(self, method: str, params: dict[str, Any]) -> Awaitable[Any]: ...

    def congested(self) -> bool: ...

    def when_drained(self, callback: Callable[[], None]) -> None: ...


@attrs.define
class EditorInfo:
    """What `initialize` told us about the editor."""

    workspace_root: str | None = None
    client_tools: bool = False
    permission_requests: bool = False


@attrs.define
class SensitiveContext:
    """Per-session secrets: memory only, never logged, never persisted."""

    access_token: str | None = attrs.field(default=None, repr=False)


def session_from_row(row: tuple[Any, ...], status: str | None = None) -> t.Session:
    (
        sid,
        client_id,
        actor,
        project,
        project_id,
        parent_id,
        title,
        workspace_root,
        model,
        scope_key,
        created,
        updated,
        row_status,
        _run_id,
        _pid,
        inp,
        out,
        reas,
        cread,
        cwrite,
        cost,
    ) = row
    return t.Session(
        id=sid,
        client_session_id=client_id,
        title=title,
        project_key=project,
        actor_key=actor,
        session_scope_key=scope_key,
        # "unclosed" (a run whose end the log could not take) is idle to the editor.
        status=cast(
            t.SessionStatus, status or ("idle" if row_status == "unclosed" else row_status)
        ),
        time=t.SessionTime(created=created, updated=updated),
        usage=t.Usage(inp, out, reas, cread, cwrite),
        cost=float(Decimal(cost)),
        parent_id=parent_id,
        project_id=project_id,
        workspace_root=workspace_root,
        model=model,
    )


def encode_cursor(updated: int, session_id: str) -> str:
    return f"{updated:x}.{session_id}"


def decode_cursor(cursor: str) -> tuple[int, str]:
    updated, _, sid = cursor.partition(".")
    try:
        value = int(updated, 16)
    except ValueError:
        value = -1
    if value < 0 or not ids.is_valid_id(sid, "ses"):
        raise InvalidParams(
            "params.cursor: not a cursor this server issued", data={"field": "cursor"}
        )
    return value, sid


class SessionManager:
    def __init__(self, config: Config, link: EditorLink) -> None:
        self.config = config
        self.link = link
        self.editor = EditorInfo()
        self.sessions_dir = config.data_dir / "sessions"
        self.catalog = Catalog(config.data_dir / "catalog.sqlite3")
        self.toolctx = ToolContextStore(config.tool_context_dir)
        self.mcp = McpServers(config.mcp_servers, link.notify, config.tool_context_dir)
        # Open logs with their folded state, least recently used first; idle ones beyond
        # LOG_CACHE are closed (their state is read again from disk when needed).
        self._logs: collections.OrderedDict[str, SessionLog] = collections.OrderedDict()
        self._secrets: dict[str, SensitiveContext] = {}
        # run/resolve's first tier: runId → (sessionId, clientSessionId, scopeKey), the
        # RUN_CACHE most recent; older runs are found in the catalog.
        self._run_cache: collections.OrderedDict[str, dict[str, str]] = collections.OrderedDict()
        # Filled by the run layer (agentd.runs) when it is attached.
        self.runs: Any = None
        # Which sandbox works here: probed in a thread from the start (initialize says).
        self.sandbox = SandboxProbe()
        # A mode given by session/create for an existing session (this daemon only).
        self._sandbox_modes: dict[str, str] = {}

    # --- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Open storage, rebuild the catalog if needed, close runs of dead daemons, and
        sweep stale tool-context files. Runs before serving, off the hot path."""
        file_modes.make_private_dir(self.config.data_dir)
        file_modes.make_private_dir(self.config.state_dir)
        # Left too open by an older agentd or a looser umask: made private.
        catalog = self.catalog.path.name
        problems = file_modes.tighten_tree(
            self.config.data_dir,
            lambda name: name == self.sessions_dir.name or name.startswith(catalog),
        )
        # The tool-context directory is checked by the tool-context store itself.
        toolctx = self.toolctx.directory.name
        problems += file_modes.tighten_tree(
            self.config.state_dir, lambda name: name == toolctx, checked_elsewhere=(toolctx,)
        )
        for problem in problems:
            logger.warning("file permissions: %s", problem)
        file_modes.make_private_dir(self.sessions_dir)
        usable = self.catalog.open_sync()
        if not usable and self.sessions_dir.exists() and any(os.scandir(self.sessions_dir)):
            reindex_sync(self.catalog, self.sessions_dir)
        removed = self.toolctx.prepare()
        if removed:
            logger.info("removed %d stale tool-context files", removed)

    async def close(self) -> None:
        for log in self._logs.values():
            await log.flush()
            log.close()
        self._logs.clear()
        await asyncio.to_thread(self.catalog.close)

    # --- helpers -----------------------------------------------------------------------

    def session_dir(self, session_id: str) -> Path:
        return self.sessions_dir / session_id

    def log_for(self, session_id: str) -> SessionLog:
        log = self._logs.get(session_id)
        if log is None:
            log = self._logs[session_id] = SessionLog(self.session_dir(session_id))
            self._evict_logs()
        else:
            self._logs.move_to_end(session_id)
        return log

    def _evict_logs(self) -> None:
        excess = len(self._logs) - LOG_CACHE
        for sid in list(self._logs)[:excess]:
            log = self._logs[sid]
            if (self.runs is not None and self.runs.owns(sid)) or log.busy:
                continue
            del self._logs[sid]
            log.close()

    async def sandbox_info(self) -> t.SandboxInfo:
        status = await self.sandbox.status()
        settings = self.config.sandbox
        return t.SandboxInfo(
            available=status.available,
            mechanism=status.mechanism.name if status.mechanism else None,
            reason=status.reason,
            mode=cast(t.SandboxMode, settings.mode),
            network=settings.network,
            approval=cast(Any, settings.approval),
            unconfined=cast(Any, settings.unconfined),
        )

    async def sandbox_status(self) -> SandboxStatus:
        return await self.sandbox.status()

    def sandbox_mode(self, session_id: str, header: dict[str, Any]) -> str:
        """The session's sandbox mode: given to session/create, else the configured one."""
        return (
            self._sandbox_modes.get(session_id) or header.get("sandbox") or self.config.sandbox.mode
        )

    def secrets_for(self, session_id: str) -> SensitiveContext:
        return self._secrets.setdefault(session_id, SensitiveContext())

    def local_status(self, session_id: str) -> str | None:
        return self.runs.status_of(session_id) if self.runs is not None else None

    async def get_row(self, session_id: str) -> tuple[Any, ...]:
        if not isinstance(session_id, str) or not ids.is_valid_id(session_id, "ses"):
            raise SessionNotFound(
                f"session not found: {session_id}", data={"sessionId": session_id}
            )
        row = await self.catalog.run(self._row_with_log, session_id)
        if row is None:
            self._drop_log(session_id)
            raise SessionNotFound(
                f"session not found: {session_id}", data={"sessionId": session_id}
            )
        return row

    def _row_with_log(self, session_id: str) -> tuple[Any, ...] | None:
        """The catalog row, if the session's log (the source of truth) still exists; a
        row whose log was deleted by hand is dropped, so the catalog heals. On the
        catalog thread: the stat costs microseconds, and never the event loop's."""
        row = self.catalog.get_session(session_id)
        if row is not None and not (self.session_dir(session_id) / LOG_NAME).exists():
            self._forget_row(session_id, "its log is missing")
            return None
        return row

    def _forget_row(self, session_id: str, why: str) -> None:
        logger.warning("session %s: %s; removed from the catalog", session_id, why)
        self.catalog.delete_sessions([session_id])

    async def forget_broken(self, session_id: str, why: str) -> SessionNotFound:
        """A session whose log cannot be used (no header line): it leaves the catalog
        (its folder stays on disk, untouched) and the caller answers 1001."""
        await self.catalog.run(self._forget_row, session_id, why)
        self._drop_log(session_id)
        return SessionNotFound(
            f"session {session_id} cannot be used: {why}", data={"sessionId": session_id}
        )

    def _drop_log(self, session_id: str) -> None:
        log = self._logs.pop(session_id, None)
        if log is not None:
            log.close()

    async def get_session_obj(self, session_id: str) -> t.Session:
        row = await self.get_row(session_id)
        return self._session(row)

    def _session(self, row: tuple[Any, ...]) -> t.Session:
        return session_from_row(row, self.local_status(row[0]))

    def emit_session(self, session: t.Session) -> None:
        self.link.notify("session/updated", {"session": unstructure(session)})

    async def emit_session_by_id(self, session_id: str) -> t.Session | None:
        return self._emit_row(await self.catalog.run(self.catalog.get_session, session_id))

    def _emit_row(self, row: tuple[Any, ...] | None) -> t.Session | None:
        """session/updated for a catalog row (None: the session is gone)."""
        if row is None:
            return None
        session = self._session(row)
        self.emit_session(session)
        return session

    # --- session/create ----------------------------------------------------------------

    async def create(self, p: t.SessionCreateParams) -> t.SessionCreateResult:
        actor = keys.actor_key(p.user_id)
        project = keys.project_key(p.project_id)
        if p.parent_id is not None:
            await self.get_row(p.parent_id)  # 1001 when unknown
        if p.model is not None and self.config.resolve_model(p.model) is None:
            raise ModelNotConfigured(f"unknown model: {p.model}", data={"model": p.model})
        mcp_specs = _mcp_specs(p.mcp_servers)
        if p.client_session_id is not None and not 1 <= len(p.client_session_id) <= 512:
            raise InvalidParams(
                "params.clientSessionId: must be 1 to 512 characters",
                data={"field": "clientSessionId"},
            )
        # The catalog's unique index on (actor, project, clientSessionId) decides between
        # daemons (and between concurrent requests of one daemon): each writes its own
        # log first, only one insert wins, and the losers drop their log and answer the
        # winner's session. The winner may be deleted before a loser reads it: try again.
        for _ in range(CREATE_ATTEMPTS):
            if p.client_session_id is not None:
                found = await self.catalog.run(
                    self.catalog.find_by_client, actor, project, p.client_session_id
                )
                if found is not None:
                    self._attach(found[0], p.access_token, mcp_specs, p.sandbox)
                    return t.SessionCreateResult(session=self._session(found), created=False)
            session_id = await self._insert_new(p, actor, project)
            if session_id is not None:
                break
        else:
            raise SessionBusy(
                "params.clientSessionId: another agentd keeps creating and deleting this "
                "session; try again",
                data={"clientSessionId": p.client_session_id},
            )
        self._attach(session_id, p.access_token, mcp_specs)
        session = self._session(await self.get_row(session_id))
        self.emit_session(session)
        return t.SessionCreateResult(session=session, created=True)

    async def _insert_new(self, p: t.SessionCreateParams, actor: str, project: str) -> str | None:
        """Write a new session's log, then claim its row in the catalog. Returns its id,
        or None when another create took the clientSessionId first (this one's log is
        removed again)."""
        client_id = p.client_session_id or keys.new_client_session_id()
        now = ids.now_ms()
        session_id = ids.new_id("ses")
        workspace_root = p.workspace_root or self.editor.workspace_root
        header = {
            "id": session_id,
            "clientSessionId": client_id,
            "parentId": p.parent_id,
            "title": p.title or DEFAULT_TITLE,
            "titleSet": p.title is not None,
            "projectId": p.project_id,
            "projectKey": project,
            "actorKey": actor,
            "sessionScopeKey": keys.session_scope_key(actor, project, client_id),
            "workspaceRoot": workspace_root,
            "model": p.model,
            "traceId": p.trace_id or keys.new_trace_id(),
            "created": now,
        }
        if p.sandbox is not None:
            header["sandbox"] = p.sandbox
        log = self.log_for(session_id)
        log.append({"k": "session", "session": header, "at": now})
        await log.flush()
        row = {
            "id": session_id,
            "client_session_id": client_id,
            "actor_key": actor,
            "project_key": project,
            "project_id": p.project_id,
            "parent_id": p.parent_id,
            "title": header["title"],
            "workspace_root": workspace_root,
            "model": p.model,
            "scope_key": header["sessionScopeKey"],
            "created": now,
            "updated": now,
        }
        if await self.catalog.run(self.catalog.insert_session, row):
            return session_id
        # The log may have left the open-log cache already (many creates at once).
        lost = self._logs.pop(session_id, None)
        if lost is not None:
            lost.close()
        await asyncio.to_thread(shutil.rmtree, self.session_dir(session_id), True)
        return None

    def _attach(
        self,
        session_id: str,
        token: str | None,
        mcp_specs: list[McpServerSpec] | None,
        sandbox: str | None = None,
    ) -> None:
        """What session/create gives a session in memory only: its access token, its
        own MCP servers (their env and headers may hold secrets too), and a sandbox mode
        given again for an existing session (a new one keeps its mode in its log)."""
        if token is not None:
            self.secrets_for(session_id).access_token = token
        if sandbox is not None:
            self._sandbox_modes[session_id] = sandbox
        if mcp_specs is not None:
            self.mcp.set_session_servers(session_id, mcp_specs)

    # --- get / list / messages / update ------------------------------------------------

    async def get(self, p: t.SessionIdParams) -> t.SessionResult:
        return t.SessionResult(session=await self.get_session_obj(p.session_id))

    async def list(self, p: t.SessionListParams) -> t.SessionListResult:
        limit = LIST_DEFAULT if p.limit is None else p.limit
        if not 1 <= limit <= LIST_MAX:
            raise InvalidParams(
                f"params.limit: must be between 1 and {LIST_MAX}", data={"field": "limit"}
            )
        cursor = decode_cursor(p.cursor) if p.cursor else None
        rows = await self.catalog.run(
            lambda: self.catalog.list_sessions(
                limit=limit + 1,
                cursor=cursor,
                parent_id=p.parent_id,
                roots_only=bool(p.roots_only),
                project_id=p.project_id,
                query=p.query,
            )
        )
        more = len(rows) > limit
        rows = rows[:limit]
        sessions = [self._session(r) for r in rows]
        next_cursor = encode_cursor(rows[-1][11], rows[-1][0]) if more else None
        return t.SessionListResult(sessions=sessions, next_cursor=next_cursor)

    async def read_state(self, session_id: str) -> LogState:
        return await self.log_for(session_id).read()

    async def messages(self, p: t.SessionMessagesParams) -> t.SessionMessagesResult:
        await self.get_row(p.session_id)
        limit = MESSAGES_DEFAULT if p.limit is None else p.limit
        if limit < 1:
            raise InvalidParams("params.limit: must be at least 1", data={"field": "limit"})
        state = await self.read_state(p.session_id)
        if state.session is None:
            raise await self.forget_broken(p.session_id, "its log has no session header")
        all_ids = list(state.messages)
        end = len(all_ids)
        if p.before is not None:
            if p.before not in state.messages:
                raise InvalidParams(
                    f"params.before: no message {p.before} in this session",
                    data={"field": "before"},
                )
            end = all_ids.index(p.before)
        start = max(0, end - limit)
        wire = await self.log_for(p.session_id).read_messages(all_ids[start:end])
        page = [structure(m, t.Message) for m in wire]
        live = self.runs.live_messages(p.session_id) if self.runs is not None else {}
        if live:
            page = [live.get(m.id, m) for m in page]
        return t.SessionMessagesResult(
            messages=page, next_before=all_ids[start] if start > 0 else None
        )

    async def update(self, p: t.SessionUpdateParams) -> t.SessionResult:
        mcp_specs = _mcp_specs(p.mcp_servers)
        await self.get_row(p.session_id)
        if mcp_specs is not None:
            self.mcp.set_session_servers(p.session_id, mcp_specs)
        if p.title is not None:
            await self.set_title(p.session_id, p.title)
        return t.SessionResult(session=await self.get_session_obj(p.session_id))

    async def mcp_list(self, p: t.McpListParams) -> t.McpListResult:
        if p.session_id is not None:
            await self.get_row(p.session_id)  # 1001 when unknown
        return await self.mcp.list(p)

    async def set_title(
        self, session_id: str, title: str, *, generated: bool = False
    ) -> t.Session | None:
        """A title from the user, or `generated` by the model after a first run: a
        generated title never replaces one the user gave, even one given while it was
        being generated. The catalog gets the log's effective title."""
        title = " ".join(title.split())[:200] or DEFAULT_TITLE
        now = ids.now_ms()
        log = self.log_for(session_id)
        record: dict[str, Any] = {"k": "title", "title": title, "at": now}
        if generated:
            if (await log.read()).titled_by_user:
                return None
            # No await between the check and the append: a rename in this daemon lands
            # before or after, and the log's fold ranks it above this one either way.
            record["generated"] = True
        log.append(record)
        await log.flush()
        state = await log.read()
        return self._emit_row(
            await self.catalog.run(
                self.catalog.update_session,
                session_id,
                {"title": state.title or title, "updated": now},
            )
        )

    # --- delete ------------------------------------------------------------------------

    async def delete(self, p: t.SessionIdParams) -> t.SessionDeleteResult:
        try:
            await self.get_row(p.session_id)
        except SessionNotFound:
            return t.SessionDeleteResult(deleted=False)
        doomed = await self.catalog.run(self._descendants, p.session_id)
        for sid in doomed:
            if self.runs is not None:
                await self.runs.abort_session(sid, drop_queue=True)
            # Still locked after our own abort: another daemon is running it.
            if not await asyncio.to_thread(lock_is_free, self.session_dir(sid)):
                raise SessionBusy("session is running in another agentd", data={"sessionId": sid})
        rows = [await self.catalog.run(self.catalog.get_session, sid) for sid in doomed]
        await self.catalog.run(self.catalog.delete_sessions, doomed)
        for sid, row in zip(doomed, rows, strict=True):
            if row is not None:
                await self.toolctx.discard_stale(row[9])
            log = self._logs.pop(sid, None)
            if log is not None:
                await log.flush()
                log.close()
            self._secrets.pop(sid, None)
            self._sandbox_modes.pop(sid, None)
            self.mcp.drop_session(sid)
            await asyncio.to_thread(shutil.rmtree, self.session_dir(sid), True)
        for run_id in [r for r, v in self._run_cache.items() if v["sessionId"] in doomed]:
            del self._run_cache[run_id]
        return t.SessionDeleteResult(deleted=True)

    # `builtins.list`: in this class `list` is the session/list handler.
    def _descendants(self, session_id: str) -> builtins.list[str]:
        out, todo = [], [session_id]
        while todo:
            sid = todo.pop()
            out.append(sid)
            todo.extend(self.catalog.children(sid))
        return out

    # --- run/resolve, toolContext/get, models/list -------------------------------------

    def cache_run(self, run_id: str, entry: dict[str, str]) -> None:
        """Merge into the cache: a field already set is never replaced by an absent one."""
        current = self._run_cache.setdefault(run_id, {})
        self._run_cache.move_to_end(run_id)
        for key, value in entry.items():
            if value is not None:
                current[key] = value
        while len(self._run_cache) > RUN_CACHE:
            self._run_cache.popitem(last=False)

    async def resolve_run(self, p: t.RunResolveParams) -> t.RunResolveResult | None:
        cached = self._run_cache.get(p.run_id)
        if cached is None or len(cached) < 3:
            if not ids.is_valid_id(p.run_id, "run"):
                return None
            row = await self.catalog.run(self.catalog.resolve_run, p.run_id)
            if row is None:
                return None
            self.cache_run(
                p.run_id,
                {"sessionId": row[0], "clientSessionId": row[1], "sessionScopeKey": row[2]},
            )
            cached = self._run_cache[p.run_id]
        return t.RunResolveResult(
            session_id=cached["sessionId"],
            client_session_id=cached["clientSessionId"],
            session_scope_key=cached["sessionScopeKey"],
        )

    async def tool_context(self, p: t.ToolContextGetParams) -> t.ToolContext | None:
        data = await self.toolctx.get(p.session_scope_key)
        if data is None:
            return None
        try:
            return structure(data, t.ToolContext)
        except Exception:
            return None

    def models(self) -> t.ModelsListResult:
        out = []
        for model in self.config.models.values():
            out.append(
                t.ModelInfo(
                    id=model.id,
                    provider=model.provider,
                    default=model.id == self.config.default_model,
                    context_window=model.context_window,
                    max_output_tokens=model.max_output_tokens,
                )
            )
        return t.ModelsListResult(models=out)


def _mcp_specs(servers: list[t.McpServer] | None) -> list[McpServerSpec] | None:
    """session/create's or session/update's `mcpServers` as specs (-32602 naming the
    server and field); None when not given."""
    if servers is None:
        return None
    specs: list[McpServerSpec] = []
    seen: set[str] = set()
    for index, server in enumerate(servers):
        raw = unstructure(server)
        name = raw.pop("name")
        where = f"params.mcpServers[{index}]"
        for key in _MILLISECONDS:
            if raw.get(key) is not None and raw[key] <= 0:
                raise InvalidParams(
                    f"{where}.{key}: expected a positive number of milliseconds, got {raw[key]}",
                    data={"field": "mcpServers"},
                )
        raw = {_SNAKE.get(k, k): v for k, v in raw.items()}
        for key in ("timeout", "startup_timeout"):
            if raw.get(key) is not None:
                raw[key] = raw[key] / 1000
        try:
            spec = mcp_server_spec(name, raw, where)
        except ValueError as exc:
            raise InvalidParams(str(exc), data={"field": "mcpServers"}) from None
        if name in seen:
            raise InvalidParams(
                f"{where}.name: {name!r} is given twice", data={"field": "mcpServers"}
            )
        seen.add(name)
        specs.append(spec)
    return specs


_SNAKE = {"timeoutMs": "timeout", "startupTimeoutMs": "startup_timeout"}
_MILLISECONDS = tuple(_SNAKE)
