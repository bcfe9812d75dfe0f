"""Rebuild the catalog from the session logs (`agentd reindex`, or by itself when the
catalog is missing or corrupt). The logs are the source of truth."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agentd import ids
from agentd.storage.catalog import DEFAULT_TITLE, CatalogTables, forked_from_columns
from agentd.storage.log import LOG_NAME, LogState, read_log_file

logger = logging.getLogger(__name__)


def reindex_sync(catalog: CatalogTables, sessions_dir: Path) -> int:
    """Returns the number of sessions indexed. Runs on the caller's thread.

    Two logs may claim one clientSessionId (per actor and project): a daemon that lost a
    create race and died before removing its log, or logs copied in by hand. The catalog
    keeps one: the log with the most messages, then the oldest. An empty duplicate never
    hides a session that holds a conversation."""
    count = 0

    def work() -> None:
        nonlocal count
        # (actor, project, clientSessionId) -> (rank, session id) of the log indexed.
        indexed: dict[tuple[str, str, str], tuple[tuple[int, int, str], str]] = {}
        for entry in os.scandir(sessions_dir):
            if not ids.is_valid_id(entry.name, "ses"):
                continue
            path = Path(entry.path) / LOG_NAME
            if not path.exists():
                continue
            state = read_log_file(path)
            header = state.session
            if header is None or header.get("id") != entry.name:
                logger.warning("no session header in %s: skipped", path)
                continue
            key = (header["actorKey"], header["projectKey"], header["clientSessionId"])
            rank = (-len(state.messages), header["created"], header["id"])
            previous = indexed.get(key)
            if previous is not None:
                better = rank < previous[0]
                kept, dropped = (
                    (header["id"], previous[1]) if better else (previous[1], header["id"])
                )
                logger.warning(
                    "sessions %s and %s share clientSessionId %r: indexing %s, the one "
                    "with more messages (or the older)",
                    kept,
                    dropped,
                    key[2],
                    kept,
                )
                if not better:
                    continue
                catalog.delete_rows([dropped])
                count -= 1
            indexed[key] = (rank, header["id"])
            _index(catalog, state)
            count += 1

    catalog.transaction(work)
    logger.info("reindexed %d sessions from %s", count, sessions_dir)
    return count


def _index(catalog: CatalogTables, state: LogState) -> None:
    header = state.session
    assert header is not None
    last_message_at = max(
        [
            m.meta.get("time", {}).get("completed") or m.meta.get("time", {}).get("created", 0)
            for m in state.messages.values()
        ]
        or [0]
    )
    catalog.upsert_session(
        {
            "id": header["id"],
            "client_session_id": header["clientSessionId"],
            "actor_key": header["actorKey"],
            "project_key": header["projectKey"],
            "project_id": header.get("projectId"),
            "parent_id": header.get("parentId"),
            "title": state.title or DEFAULT_TITLE,
            "workspace_root": header.get("workspaceRoot"),
            "model": state.model,
            "scope_key": header["sessionScopeKey"],
            "created": header["created"],
            "updated": max(header["created"], state.last_at, last_message_at),
            # A run still open in the log is closed by recovery, which looks for it.
            "status": "busy" if state.open_runs else "idle",
            "run_id": next(iter(state.open_runs), None),
            **state.catalog_totals(),
            **forked_from_columns(header),
        }
    )
    run_rows = {}
    for msg in state.messages.values():
        run_id = msg.meta.get("runId")
        if run_id:
            t = msg.meta.get("time", {})
            run_rows[run_id] = (run_id, header["id"], t.get("created", 0), t.get("completed"))
    catalog.insert_runs(run_rows.values())
