"""The catalog: a SQLite index of sessions and runs, derived from the logs.

`session/list` (every filter, cursor pagination) and `run/resolve` read only this.
It can always be rebuilt from the logs (`agentd reindex`), and is rebuilt when it is
missing or unreadable. Several daemons may share it: WAL mode, a busy timeout, and
short transactions. All access goes through one thread, so the event loop never
waits on SQLite locks held by another process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import attrs

from agentd.errors import StorageError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_TITLE = "New session"


T = TypeVar("T")


@attrs.frozen(slots=True)
class SessionRow:
    """A session as the catalog holds it (the columns of SESSION_COLUMNS, in order)."""

    id: str
    client_session_id: str
    actor_key: str
    project_key: str
    project_id: str | None
    parent_id: str | None
    title: str
    workspace_root: str | None
    model: str | None
    scope_key: str
    created: int
    updated: int
    # idle, busy, retry, or "unclosed" (a run whose end its log could not take).
    status: str
    run_id: str | None
    owner_pid: int | None
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost: str  # a Decimal's text: sums stay exact
    # session/fork's origin (a session's `forkedFrom`); None for other sessions.
    forked_from_session: str | None = None
    forked_from_message: str | None = None

    @property
    def token_counts(self) -> tuple[int, int, int, int, int]:
        """Input, output, reasoning, cache-read and cache-write tokens (`Usage`'s order)."""
        return (
            self.input_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
        )


SESSION_COLUMNS = ", ".join(a.name for a in attrs.fields(SessionRow))


@attrs.frozen(slots=True)
class RunOwner:
    """The session a run belongs to (`run/resolve`)."""

    session_id: str
    client_session_id: str
    scope_key: str


def forked_from_columns(header: dict[str, Any]) -> dict[str, Any]:
    """A session log header's `forkedFrom` as the catalog's columns."""
    forked = header.get("forkedFrom") or {}
    return {
        "forked_from_session": forked.get("sessionId"),
        "forked_from_message": forked.get("messageId"),
    }


def _session_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> SessionRow:
    return SessionRow(*row)


# A run writes the catalog twice: at its start (its `runs` row; the session busy, which
# other daemons list and crash recovery looks for) and at its end (idle, totals, `updated`).
# SQLite writes each page a commit dirties whole, to the WAL and again to the database at
# a checkpoint, so what a run costs on disk is pages dirtied times page size (measured:
# 16 pages of 4 KiB, 4 times the log's bytes for a 2,000-token answer). Hence: new
# catalogs use small pages (CATALOG_PAGE_SIZE); `runs` is its primary key's b-tree
# (WITHOUT ROWID: one b-tree less per insert); `updated`, in three indexes, moves once per
# run, at its end, and the index for `projectId` holds only sessions that have one. An
# older schema's `sessions_roots` was never chosen by the planner (`sessions_parent`
# serves `parent_id IS NULL` in the same order) and is dropped, as is its
# `sessions_project`, which held every session.
CATALOG_PAGE_SIZE = 1024

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY,
  client_session_id TEXT NOT NULL,
  actor_key TEXT NOT NULL,
  project_key TEXT NOT NULL,
  project_id TEXT,
  parent_id TEXT,
  title TEXT NOT NULL,
  title_fold TEXT NOT NULL,
  workspace_root TEXT,
  model TEXT,
  scope_key TEXT NOT NULL,
  created INTEGER NOT NULL,
  updated INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'idle',
  run_id TEXT,
  owner_pid INTEGER,
  input_tokens INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  reasoning_tokens INTEGER NOT NULL DEFAULT 0,
  cache_read_tokens INTEGER NOT NULL DEFAULT 0,
  cache_write_tokens INTEGER NOT NULL DEFAULT 0,
  cost TEXT NOT NULL DEFAULT '0',
  forked_from_session TEXT,
  forked_from_message TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS sessions_client
  ON sessions (actor_key, project_key, client_session_id);
CREATE INDEX IF NOT EXISTS sessions_order ON sessions (updated DESC, id DESC);
CREATE INDEX IF NOT EXISTS sessions_parent ON sessions (parent_id, updated DESC, id DESC);
CREATE INDEX IF NOT EXISTS sessions_in_project ON sessions (project_id, updated DESC, id DESC)
  WHERE project_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS sessions_busy ON sessions (status) WHERE status != 'idle';
CREATE INDEX IF NOT EXISTS sessions_scope ON sessions (scope_key);
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  session_id TEXT NOT NULL,
  started INTEGER NOT NULL,
  ended INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_session ON runs (session_id);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '{SCHEMA_VERSION}');
"""


class CatalogCorrupt(Exception):
    pass


# Columns added since schema 1 was first written: added in place to an older catalog
# (empty there, which is right: no session had them), and ignored by an older agentd
# sharing the data dir, so the schema version stays.
_ADDED_COLUMNS = {"forked_from_session": "TEXT", "forked_from_message": "TEXT"}


# Indexes an older schema had (see the comment above _SCHEMA).
_OLD_INDEXES = ("sessions_roots", "sessions_project")


def _add_columns(db: sqlite3.Connection) -> None:
    have = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in have:
            with contextlib.suppress(sqlite3.OperationalError):  # another daemon added it
                db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {kind}")


def _shrink_pages(db: sqlite3.Connection, path: Path) -> None:
    """A catalog made with bigger pages (by an older agentd) is rewritten once with
    CATALOG_PAGE_SIZE. Leaving WAL mode to do it needs the only connection to the file:
    while another daemon has it open this fails at once and is tried at a later start.
    A crash during the VACUUM is rolled back by SQLite's journal."""
    if db.execute("PRAGMA page_size").fetchone()[0] == CATALOG_PAGE_SIZE:
        return
    db.execute("PRAGMA busy_timeout=0")
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute(f"PRAGMA page_size={CATALOG_PAGE_SIZE}")
        db.execute("VACUUM")
        logger.info("catalog %s rewritten with %d-byte pages", path, CATALOG_PAGE_SIZE)
    except sqlite3.OperationalError as exc:
        # Another daemon has it open (or the disk is full): it keeps its pages for now.
        logger.info("catalog %s keeps its page size for now (%s)", path, exc)
    finally:
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("PRAGMA journal_mode=WAL")


class Catalog:
    """The catalog file and the one thread that reads and writes it. Callers on the
    event loop use the async methods; `tables` is for the catalog thread itself and for
    startup, before the loop serves anything (opening, reindexing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="agentd-catalog"
        )
        self._tables: CatalogTables | None = None

    # --- plumbing ----------------------------------------------------------------------

    def open_sync(self) -> bool:
        """Open (creating if needed). Returns False when the file was missing or unusable
        and a fresh, empty catalog was made: the caller then reindexes from the logs."""
        existed = self.path.exists()
        try:
            db = self._connect()
            self._tables = CatalogTables(db)
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None or row[0] != str(SCHEMA_VERSION):
                raise CatalogCorrupt(f"schema {row and row[0]!r}")
            _shrink_pages(db, self.path)
            return existed
        except (sqlite3.DatabaseError, CatalogCorrupt) as exc:
            logger.warning("catalog %s unusable (%s): rebuilding from the logs", self.path, exc)
            self._discard()
            self._tables = CatalogTables(self._connect())
            return False

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Made 0600 before SQLite opens it, whatever the umask: SQLite gives its -wal
        # and -shm files the database file's permissions.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        # Takes effect only while the file is still empty (a new catalog); an existing
        # one keeps its page size.
        db.execute(f"PRAGMA page_size={CATALOG_PAGE_SIZE}")
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: commits survive a process crash; the catalog is derived anyway.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        _add_columns(db)
        # An older agentd sharing the data dir makes them again: harmless, they cost writes.
        for index in _OLD_INDEXES:
            db.execute(f"DROP INDEX IF EXISTS {index}")
        return db

    def _discard(self) -> None:
        if self._tables is not None:
            with contextlib.suppress(sqlite3.Error):
                self._tables.db.close()
            self._tables = None
        stamp = time.strftime("%Y%m%d%H%M%S")
        if self.path.exists():
            self.path.replace(self.path.with_name(f"{self.path.name}.corrupt-{stamp}"))
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    @property
    def tables(self) -> CatalogTables:
        assert self._tables is not None, "catalog not open"
        return self._tables

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the catalog thread (work that needs several statements,
        or a check beside them, without a hop back to the loop in between)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.OperationalError as exc:
            # Disk full, read-only, I/O error: SQLite rolled the transaction back.
            raise StorageError(
                f"cannot write the session catalog ({exc}): {self.path}",
                data={"path": str(self.path)},
            ) from exc

    def close(self) -> None:
        def _close() -> None:
            if self._tables is not None:
                self._tables.db.close()
                self._tables = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)

    # --- from the event loop -----------------------------------------------------------

    async def insert(self, row: dict[str, Any]) -> bool:
        return await self.call(self.tables.insert_session, row)

    async def insert_whole(
        self, row: dict[str, Any], runs: list[tuple[str, str, int, int | None]]
    ) -> bool:
        return await self.call(self.tables.insert_whole, row, runs)

    async def get(self, session_id: str) -> SessionRow | None:
        return await self.call(self.tables.get_session, session_id)

    async def find_by_client(self, actor: str, project: str, client_id: str) -> SessionRow | None:
        return await self.call(self.tables.find_by_client, actor, project, client_id)

    async def update(self, session_id: str, fields: dict[str, Any]) -> SessionRow | None:
        return await self.call(self.tables.update_session, session_id, fields)

    async def list_sessions(
        self,
        *,
        limit: int,
        cursor: tuple[int, str] | None,
        parent_id: str | None,
        roots_only: bool,
        project_id: str | None,
        query: str | None,
        workspace_root: str | None = None,
    ) -> list[SessionRow]:
        where: list[str] = []
        args: list[Any] = []
        if cursor is not None:
            where.append("(updated < ? OR (updated = ? AND id < ?))")
            args += [cursor[0], cursor[0], cursor[1]]
        if parent_id is not None:
            where.append("parent_id = ?")
            args.append(parent_id)
        elif roots_only:
            where.append("parent_id IS NULL")
        if project_id is not None:
            where.append("project_id = ?")
            args.append(project_id)
        if query:
            where.append("instr(title_fold, ?) > 0")
            args.append(query.casefold())
        if workspace_root is not None:
            where.append("workspace_root = ?")
            args.append(workspace_root)
        sql = f"SELECT {SESSION_COLUMNS} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY updated DESC, id DESC LIMIT ?"
        args.append(limit)
        return await self.call(lambda: self.tables.select_sessions(sql, args))

    async def descendants(self, session_id: str) -> list[str]:
        return await self.call(self.tables.descendants, session_id)

    async def delete(self, session_ids: list[str]) -> None:
        await self.call(self.tables.delete_sessions, session_ids)

    async def busy(self) -> list[SessionRow]:
        return await self.call(self.tables.busy_sessions)

    async def start_run(self, run_id: str, session_id: str, at: int, pid: int) -> None:
        def start() -> None:
            db = self.tables.db
            db.execute(
                "INSERT OR REPLACE INTO runs (run_id, session_id, started) VALUES (?, ?, ?)",
                (run_id, session_id, at),
            )
            # `updated` moves at the run's end (see _SCHEMA's comment).
            db.execute(
                "UPDATE sessions SET status = 'busy', run_id = ?, owner_pid = ? WHERE id = ?",
                (run_id, pid, session_id),
            )

        await self.call(self.tables.transaction, start)

    async def end_run(
        self, run_id: str, session_id: str, at: int, totals: dict[str, Any], *, closed: bool = True
    ) -> None:
        """`closed=False`: the run's end could not be written to its log; the session is
        idle but marked `unclosed`, so the next start's recovery closes the run in the
        log (the wire shows it idle)."""
        values = {**totals, "at": at, "id": session_id, "status": "idle" if closed else "unclosed"}

        def end() -> None:
            db = self.tables.db
            db.execute("UPDATE runs SET ended = ? WHERE run_id = ?", (at, run_id))
            db.execute(
                "UPDATE sessions SET status = :status, run_id = NULL, owner_pid = NULL,"
                " updated = max(updated, :at), input_tokens = :input_tokens,"
                " output_tokens = :output_tokens, reasoning_tokens = :reasoning_tokens,"
                " cache_read_tokens = :cache_read_tokens,"
                " cache_write_tokens = :cache_write_tokens, cost = :cost WHERE id = :id",
                values,
            )

        await self.call(self.tables.transaction, end)

    async def resolve_run(self, run_id: str) -> RunOwner | None:
        return await self.call(self.tables.resolve_run, run_id)


class CatalogTables:
    """The catalog's SQL, on one connection: called on the catalog thread only."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def _sessions(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        cursor = self.db.execute(sql, args)
        cursor.row_factory = _session_row
        return cursor

    def select_sessions(self, sql: str, args: Any = ()) -> list[SessionRow]:
        return self._sessions(sql, args).fetchall()

    def insert_session(self, row: dict[str, Any]) -> bool:
        """Insert; False when (actor, project, clientSessionId) already exists."""
        try:
            self.db.execute(
                "INSERT INTO sessions (id, client_session_id, actor_key, project_key, project_id,"
                " parent_id, title, title_fold, workspace_root, model, scope_key, created, updated,"
                " forked_from_session, forked_from_message)"
                " VALUES (:id, :client_session_id, :actor_key, :project_key, :project_id,"
                " :parent_id, :title, :title_fold, :workspace_root, :model, :scope_key, :created,"
                " :updated, :forked_from_session, :forked_from_message)",
                {
                    "forked_from_session": None,
                    "forked_from_message": None,
                    **row,
                    "title_fold": row["title"].casefold(),
                },
            )
            return True
        except sqlite3.IntegrityError:
            return False

    def upsert_session(self, row: dict[str, Any]) -> None:
        """Reindex: write a session row whole."""
        self._write_whole("INSERT OR REPLACE", row)

    def insert_whole(
        self, row: dict[str, Any], runs: Iterable[tuple[str, str, int, int | None]]
    ) -> bool:
        """A session made whole at once (fork, import): its row, totals included, and its
        runs, in one transaction. False when (actor, project, clientSessionId) exists."""
        try:
            with self.db:
                self.db.execute("BEGIN")
                self._write_whole("INSERT", row)
                self.insert_runs(runs)
            return True
        except sqlite3.IntegrityError:
            return False

    def _write_whole(self, verb: str, row: dict[str, Any]) -> None:
        values = {
            "status": "idle",
            "run_id": None,
            "owner_pid": None,
            "input_tokens": 0,
            "output_tokens": 0,
            "reasoning_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "cost": "0",
            "forked_from_session": None,
            "forked_from_message": None,
            **row,
            "title_fold": row["title"].casefold(),
        }
        cols = [a.name for a in attrs.fields(SessionRow)] + ["title_fold"]
        self.db.execute(
            f"{verb} INTO sessions ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})",
            values,
        )

    def get_session(self, session_id: str) -> SessionRow | None:
        return self._sessions(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()

    def find_by_client(self, actor: str, project: str, client_id: str) -> SessionRow | None:
        return self._sessions(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE actor_key = ? AND project_key = ?"
            " AND client_session_id = ?",
            (actor, project, client_id),
        ).fetchone()

    def update_session(self, session_id: str, fields: dict[str, Any]) -> SessionRow | None:
        if "title" in fields:
            fields = {**fields, "title_fold": fields["title"].casefold()}
        assignments = ", ".join(f"{k} = :{k}" for k in fields)
        self.db.execute(
            f"UPDATE sessions SET {assignments} WHERE id = :_id", {**fields, "_id": session_id}
        )
        return self.get_session(session_id)

    def descendants(self, session_id: str) -> list[str]:
        """The session and every session below it, parents first."""
        out, todo = [], [session_id]
        while todo:
            sid = todo.pop()
            out.append(sid)
            todo.extend(
                r[0] for r in self.db.execute("SELECT id FROM sessions WHERE parent_id = ?", (sid,))
            )
        return out

    def delete_sessions(self, ids: Iterable[str]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.delete_rows(ids)

    def delete_rows(self, ids: Iterable[str]) -> None:
        """Delete sessions and their runs inside the caller's transaction."""
        keys = [(i,) for i in ids]
        self.db.executemany("DELETE FROM sessions WHERE id = ?", keys)
        self.db.executemany("DELETE FROM runs WHERE session_id = ?", keys)

    def busy_sessions(self) -> list[SessionRow]:
        return self._sessions(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE status != 'idle'"
        ).fetchall()

    # --- runs --------------------------------------------------------------------------

    def resolve_run(self, run_id: str) -> RunOwner | None:
        row = self.db.execute(
            "SELECT s.id, s.client_session_id, s.scope_key FROM runs r"
            " JOIN sessions s ON s.id = r.session_id WHERE r.run_id = ?",
            (run_id,),
        ).fetchone()
        return None if row is None else RunOwner(*row)

    def insert_runs(self, rows: Iterable[tuple[str, str, int, int | None]]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO runs (run_id, session_id, started, ended) VALUES (?,?,?,?)",
            rows,
        )

    def transaction(self, fn: Callable[[], T]) -> T:
        with self.db:
            self.db.execute("BEGIN")
            return fn()
