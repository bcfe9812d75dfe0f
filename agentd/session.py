"""SessionManager: sessions, their history, runs, and the lookups editors need.

The server's handlers call one method here each. Notifications and requests to the
editor go out through the `EditorLink` the server passes in; this module never sees
JSON-RPC.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from decimal import Decimal
from typing import Any, Protocol, cast

from agentd import ids, keys, session_copy, session_export
from agentd.config import Config, McpServerSpec, mcp_server_spec
from agentd.editor import EditorInfo, EditorLink
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
from agentd.storage.catalog import DEFAULT_TITLE, SessionRow, forked_from_columns
from agentd.storage.log import LogState
from agentd.storage.store import Store

logger = logging.getLogger(__name__)

LIST_DEFAULT, LIST_MAX = 50, 500
RUN_CACHE = 10_000
MESSAGES_DEFAULT = 100
# session/create's tries when the clientSessionId it lost to is deleted before it is read.
CREATE_ATTEMPTS = 5

# Wire messages with their parts (inside SessionManager, `list` is a method's name).
WireMessages = list[dict[str, Any]]


class RunsView(Protocol):
    """What the session layer needs of the run layer (`agentd.runs.RunManager`)."""

    def status_of(self, session_id: str) -> str | None: ...

    def live_messages(self, session_id: str) -> dict[str, t.Message]: ...

    async def abort_session(self, session_id: str, *, drop_queue: bool) -> str | None: ...

    async def shutdown(self) -> None: ...


class _NoRuns:
    """Before a run layer is attached: nothing runs."""

    def status_of(self, session_id: str) -> str | None:
        return None

    def live_messages(self, session_id: str) -> dict[str, t.Message]:
        return {}

    async def abort_session(self, session_id: str, *, drop_queue: bool) -> str | None:
        return None

    async def shutdown(self) -> None:
        return None


def session_from_row(row: SessionRow, status: str | None = None) -> t.Session:
    return t.Session(
        id=row.id,
        client_session_id=row.client_session_id,
        title=row.title,
        project_key=row.project_key,
        actor_key=row.actor_key,
        session_scope_key=row.scope_key,
        # "unclosed" (a run whose end the log could not take) is idle to the editor.
        status=cast(
            t.SessionStatus, status or ("idle" if row.status == "unclosed" else row.status)
        ),
        time=t.SessionTime(created=row.created, updated=row.updated),
        usage=t.Usage(*row.token_counts),
        cost=float(Decimal(row.cost)),
        parent_id=row.parent_id,
        project_id=row.project_id,
        workspace_root=row.workspace_root,
        model=row.model,
        forked_from=(
            t.ForkedFrom(session_id=row.forked_from_session, message_id=row.forked_from_message)
            if row.forked_from_session
            else None
        ),
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
        self.store = Store(config)
        self.toolctx = self.store.toolctx
        self.mcp = McpServers(config.mcp_servers, link.notify, config.tool_context_dir)
        # run/resolve's first tier: runId → (sessionId, clientSessionId, scopeKey), the
        # RUN_CACHE most recent; older runs are found in the catalog.
        self._run_cache: collections.OrderedDict[str, dict[str, str]] = collections.OrderedDict()
        # The run layer, attached by the server once it exists.
        self.runs: RunsView = _NoRuns()
        # Which sandbox works here: probed in a thread from the start (initialize says).
        self.sandbox = SandboxProbe()
        # A mode given by session/create for an existing session (this daemon only).
        self._sandbox_modes: dict[str, str] = {}

    @property
    def editor(self) -> EditorInfo:
        """The editor of the request being handled (or of the run being run)."""
        return self.link.current_editor()

    # --- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        self.store.open()

    async def close(self) -> None:
        await self.store.close()

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

    async def get_row(self, session_id: str) -> SessionRow:
        return await self.store.get_row(session_id)

    async def get_session_obj(self, session_id: str) -> t.Session:
        row = await self.get_row(session_id)
        return self.session_of(row)

    def session_of(self, row: SessionRow) -> t.Session:
        return session_from_row(row, self.runs.status_of(row.id))

    def emit_session(self, session: t.Session) -> None:
        self.link.notify("session/updated", t.SessionUpdatedParams(session))

    async def emit_session_by_id(self, session_id: str) -> t.Session | None:
        return self._emit_row(await self.store.catalog.get(session_id))

    async def refresh_totals(self, session_id: str) -> None:
        """The catalog takes the log's usage totals; the editor is told."""
        state = await self.store.log_for(session_id).read()
        await self.store.catalog.update(
            session_id, {**state.catalog_totals(), "updated": ids.now_ms()}
        )
        await self.emit_session_by_id(session_id)

    def _emit_row(self, row: SessionRow | None) -> t.Session | None:
        """session/updated for a catalog row (None: the session is gone)."""
        if row is None:
            return None
        session = self.session_of(row)
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
        if p.workspace_root is not None and "\0" in p.workspace_root:
            raise InvalidParams(
                "params.workspaceRoot: a path cannot hold a NUL byte",
                data={"field": "workspaceRoot"},
            )
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
                found = await self.store.catalog.find_by_client(actor, project, p.client_session_id)
                if found is not None:
                    self._attach(found.id, mcp_specs, p.sandbox)
                    self.link.follow(found.id)
                    return t.SessionCreateResult(session=self.session_of(found), created=False)
            session_id = await self._insert_new(p, actor, project)
            if session_id is not None:
                break
        else:
            raise SessionBusy(
                "params.clientSessionId: another agentd keeps creating and deleting this "
                "session; try again",
                data={"clientSessionId": p.client_session_id},
            )
        self._attach(session_id, mcp_specs)
        self.link.follow(session_id)
        session = self.session_of(await self.get_row(session_id))
        self.emit_session(session)
        return t.SessionCreateResult(session=session, created=True)

    async def _insert_new(self, p: t.SessionCreateParams, actor: str, project: str) -> str | None:
        """Write a new session's log, then claim its row in the catalog. Returns its id,
        or None when another create took the clientSessionId first (this one's log is
        removed again)."""
        client_id = p.client_session_id or keys.new_client_session_id()
        now = ids.now_ms()
        session_id = ids.new_id("ses")
        # The root it will run in, stored so that listing by root is stable.
        workspace_root = p.workspace_root or self.editor.workspace_root or os.getcwd()
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
        log = self.store.log_for(session_id)
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
        if await self.store.catalog.insert(row):
            return session_id
        await self.store.remove(session_id)
        return None

    def _attach(
        self,
        session_id: str,
        mcp_specs: list[McpServerSpec] | None,
        sandbox: str | None = None,
    ) -> None:
        """What session/create gives a session in memory only: its own MCP servers
        (their env and headers may hold secrets), and a sandbox mode given again for an
        existing session (a new one keeps its mode in its log). The access token is
        kept by no one: it is registered as a secret (masked wherever it could show)."""
        if sandbox is not None:
            self._sandbox_modes[session_id] = sandbox
        if mcp_specs is not None:
            self.mcp.set_session_servers(session_id, mcp_specs)

    # --- get / list / messages / update ------------------------------------------------

    async def get(self, p: t.SessionIdParams) -> t.SessionResult:
        session = await self.get_session_obj(p.session_id)
        self.link.follow(p.session_id)
        return t.SessionResult(session=session)

    async def list(self, p: t.SessionListParams) -> t.SessionListResult:
        limit = LIST_DEFAULT if p.limit is None else p.limit
        if not 1 <= limit <= LIST_MAX:
            raise InvalidParams(
                f"params.limit: must be between 1 and {LIST_MAX}", data={"field": "limit"}
            )
        cursor = decode_cursor(p.cursor) if p.cursor else None
        rows = await self.store.catalog.list_sessions(
            limit=limit + 1,
            cursor=cursor,
            parent_id=p.parent_id,
            roots_only=bool(p.roots_only),
            project_id=p.project_id,
            query=p.query,
            workspace_root=p.workspace_root,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        sessions = [self.session_of(r) for r in rows]
        next_cursor = encode_cursor(rows[-1].updated, rows[-1].id) if more else None
        return t.SessionListResult(sessions=sessions, next_cursor=next_cursor)

    async def read_state(self, session_id: str) -> LogState:
        return await self.store.log_for(session_id).read()

    async def messages(self, p: t.SessionMessagesParams) -> t.SessionMessagesResult:
        await self.get_row(p.session_id)
        limit = MESSAGES_DEFAULT if p.limit is None else p.limit
        if limit < 1:
            raise InvalidParams("params.limit: must be at least 1", data={"field": "limit"})
        state = await self.read_state(p.session_id)
        if state.session is None:
            raise await self.store.forget_broken(p.session_id, "its log has no session header")
        # Reverted messages stay in the log; shown only when asked for.
        all_ids = list(state.messages) if p.include_reverted else state.visible()
        end = len(all_ids)
        if p.before is not None:
            if p.before not in all_ids:
                raise InvalidParams(
                    f"params.before: no message {p.before} in this session",
                    data={"field": "before"},
                )
            end = all_ids.index(p.before)
        start = max(0, end - limit)
        wire = await self.store.log_for(p.session_id).read_messages(all_ids[start:end])
        page = [structure(m, t.Message) for m in wire]
        if p.include_reverted and state.reverted:
            for message in page:
                if message.id in state.reverted:
                    message.reverted = True
        # From here to the answer, nothing is awaited: a connection that starts following
        # the session now gets in this answer all a run streamed so far, and the rest as
        # notifications after it (agentd.editors).
        live = self.runs.live_messages(p.session_id)
        if live:
            page = [live.get(m.id, m) for m in page]
        self.link.follow(p.session_id)
        return t.SessionMessagesResult(
            messages=page, next_before=all_ids[start] if start > 0 else None
        )

    async def update(self, p: t.SessionUpdateParams) -> t.SessionResult:
        mcp_specs = _mcp_specs(p.mcp_servers)
        await self.get_row(p.session_id)
        if mcp_specs is not None:
            self.mcp.set_session_servers(p.session_id, mcp_specs)
        if p.model is not None:
            await self.set_model(p.session_id, p.model)
        if p.title is not None:
            await self.set_title(p.session_id, p.title)
        return t.SessionResult(session=await self.get_session_obj(p.session_id))

    async def set_model(self, session_id: str, model: str) -> None:
        """The session's model from its next run on: in its log, then the catalog."""
        if self.config.resolve_model(model) is None:
            raise ModelNotConfigured(f"unknown model: {model}", data={"model": model})
        now = ids.now_ms()
        log = self.store.log_for(session_id)
        log.append({"k": "model", "model": model, "at": now})
        await log.flush()
        self._emit_row(
            await self.store.catalog.update(session_id, {"model": model, "updated": now})
        )

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
        log = self.store.log_for(session_id)
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
            await self.store.catalog.update(
                session_id, {"title": state.title or title, "updated": now}
            )
        )

    # --- fork, export, import ----------------------------------------------------------

    async def _persisted(
        self, session_id: str, up_to: str | None = None
    ) -> tuple[LogState, WireMessages, session_copy.Compaction | None]:
        """The session's persisted history (see `session_copy`), up to and including
        message `up_to`: its folded log, its messages whole, the compaction in effect."""
        await self.get_row(session_id)  # 1001 when unknown
        log = self.store.log_for(session_id)
        state = await log.read()
        if state.session is None:
            raise await self.store.forget_broken(session_id, "its log has no session header")
        message_ids = session_copy.persisted_ids(state)
        if up_to is not None:
            if up_to not in state.messages:
                raise InvalidParams(
                    f"params.messageId: no message {up_to} in this session",
                    data={"field": "messageId"},
                )
            if up_to in state.reverted:
                raise InvalidParams(
                    f"params.messageId: message {up_to} was reverted (session/revert)",
                    data={"field": "messageId"},
                )
            if up_to not in message_ids:
                raise InvalidParams(
                    f"params.messageId: message {up_to} belongs to a run still going; "
                    "fork at an earlier message, or once the run has ended",
                    data={"field": "messageId"},
                )
            message_ids = message_ids[: message_ids.index(up_to) + 1]
        messages = await log.read_messages(message_ids)
        return state, messages, session_copy.compaction_at(state, message_ids)

    async def fork(self, p: t.SessionForkParams) -> t.SessionResult:
        state, messages, compaction = await self._persisted(p.session_id, p.message_id)
        assert state.session is not None
        source = state.session
        last = messages[-1]["id"] if messages else None
        title = " ".join(f"{state.title or DEFAULT_TITLE} (fork)".split())[:200]
        header = self._new_header(
            source,
            title=title,
            workspace_root=source.get("workspaceRoot"),
            model=state.model,
            created=ids.now_ms(),
            forked_from={"sessionId": p.session_id, "messageId": last},
        )
        sandbox = self._sandbox_modes.get(p.session_id) or source.get("sandbox")
        if sandbox is not None:
            header["sandbox"] = sandbox
        return t.SessionResult(session=await self._add_whole(header, messages, compaction))

    async def export(self, p: t.SessionExportParams) -> t.SessionExportResult:
        state, messages, compaction = await self._persisted(p.session_id)
        assert state.session is not None
        row = await self.get_row(p.session_id)
        session = session_export.exported_session(
            {**state.session, "model": state.model}, state.title or row.title, row.updated
        )
        if p.format == "markdown":
            content = await asyncio.to_thread(session_export.to_markdown, session, messages)
        else:
            content = await asyncio.to_thread(session_export.to_json, session, messages, compaction)
        return t.SessionExportResult(content=content)

    async def import_(self, p: t.SessionImportParams) -> t.SessionResult:
        document = await asyncio.to_thread(session_export.parse, p.content)
        exported = document.session
        workspace_root = p.workspace_root
        if workspace_root is None:
            here = exported.workspace_root
            is_dir = here is not None and await asyncio.to_thread(os.path.isdir, here)
            workspace_root = here if is_dir else self.editor.workspace_root
        # A model not configured here would make every chat 1003: the default serves.
        model = exported.model if self.config.resolve_model(exported.model) else None
        header = self._new_header(
            {
                "actorKey": exported.actor_key,
                "projectKey": exported.project_key,
                "projectId": exported.project_id,
            },
            title=" ".join(exported.title.split())[:200] or DEFAULT_TITLE,
            workspace_root=workspace_root,
            model=model,
            # When the conversation began; it is listed by the time it was imported.
            created=exported.time.created,
        )
        messages = [unstructure(m) for m in document.messages]
        compaction = (
            (document.compaction.summary_id, document.compaction.keep)
            if document.compaction is not None
            else None
        )
        return t.SessionResult(session=await self._add_whole(header, messages, compaction))

    def _new_header(
        self,
        like: dict[str, Any],
        *,
        title: str,
        workspace_root: str | None,
        model: str | None,
        created: int,
        forked_from: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new session's log header, for the actor and project of `like`."""
        client_id = keys.new_client_session_id()
        header = {
            "id": ids.new_id("ses"),
            "clientSessionId": client_id,
            "parentId": like.get("parentId"),
            "title": title,
            "titleSet": True,
            "projectId": like.get("projectId"),
            "projectKey": like["projectKey"],
            "actorKey": like["actorKey"],
            "sessionScopeKey": keys.session_scope_key(
                like["actorKey"], like["projectKey"], client_id
            ),
            "workspaceRoot": workspace_root,
            "model": model,
            "traceId": keys.new_trace_id(),
            "created": created,
        }
        if forked_from is not None:
            header["forkedFrom"] = forked_from
        return header

    async def _add_whole(
        self,
        header: dict[str, Any],
        messages: WireMessages,
        compaction: session_copy.Compaction | None,
    ) -> t.Session:
        """A new session holding a copy of `messages`, made whole at once."""
        session_id = header["id"]
        copy = await asyncio.to_thread(session_copy.copy_history, messages, session_id, compaction)
        now = ids.now_ms()
        row = {
            "id": session_id,
            "client_session_id": header["clientSessionId"],
            "actor_key": header["actorKey"],
            "project_key": header["projectKey"],
            "project_id": header["projectId"],
            "parent_id": header["parentId"],
            "title": header["title"],
            "workspace_root": header["workspaceRoot"],
            "model": header["model"],
            "scope_key": header["sessionScopeKey"],
            "created": header["created"],
            "updated": now,
            **copy.totals,
            **forked_from_columns(header),
        }
        records = [{"k": "session", "session": header, "at": now}, *copy.records]
        if not await self.store.add_whole(session_id, records, row, copy.runs):
            # A new random clientSessionId already taken: one chance in 2^48.
            raise SessionBusy("a new session's clientSessionId was taken; try again")
        session = self.session_of(await self.get_row(session_id))
        self.link.follow(session_id)
        self.emit_session(session)
        return session

    # --- delete ------------------------------------------------------------------------

    async def delete(self, p: t.SessionIdParams) -> t.SessionDeleteResult:
        try:
            await self.get_row(p.session_id)
        except SessionNotFound:
            return t.SessionDeleteResult(deleted=False)
        doomed = await self.store.catalog.descendants(p.session_id)
        for sid in doomed:
            await self.runs.abort_session(sid, drop_queue=True)
            # Still locked after our own abort: another daemon is running it.
            if await self.store.is_running_elsewhere(sid):
                raise SessionBusy("session is running in another agentd", data={"sessionId": sid})
        rows = [await self.store.catalog.get(sid) for sid in doomed]
        await self.store.catalog.delete(doomed)
        for sid, row in zip(doomed, rows, strict=True):
            if row is not None:
                await self.toolctx.discard_stale(row.scope_key)
            await self.store.remove(sid)
            self._sandbox_modes.pop(sid, None)
            self.mcp.drop_session(sid)
            self.link.unfollow(sid)
        for run_id in [r for r, v in self._run_cache.items() if v["sessionId"] in doomed]:
            del self._run_cache[run_id]
        return t.SessionDeleteResult(deleted=True)

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
            owner = await self.store.catalog.resolve_run(p.run_id)
            if owner is None:
                return None
            self.cache_run(
                p.run_id,
                {
                    "sessionId": owner.session_id,
                    "clientSessionId": owner.client_session_id,
                    "sessionScopeKey": owner.scope_key,
                },
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
