"""A session's history copied into a new session: what `session/fork` and
`session/import` write.

What is copied is the *persisted* history: the messages in log order up to the first
one that is not finished or belongs to a run still going (in this daemon or another),
so a fork or an export of a busy session never holds half an answer. The copy gets new
ids for every message, part and run (a tool call's `callId` stays: it pairs a call with
its result within the copy); references between messages (`parentId`, the compaction in
effect) follow the new ids. Messages hidden by session/revert are not copied; nor is the
workspace's snapshot history (a fork or an import starts with nothing to revert).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from agentd import ids
from agentd.storage.log import LogState

# A compaction: the summary message's id and the ids kept verbatim before it.
Compaction = tuple[str, list[str]]


def persisted_ids(state: LogState) -> list[str]:
    """The ids of the messages a fork or an export copies, oldest first: those not
    reverted (as session/messages shows them), up to a run still going."""
    out: list[str] = []
    for message_id in state.visible():
        msg = state.messages[message_id]
        if not msg.complete or msg.meta.get("runId") in state.open_runs:
            break
        out.append(message_id)
    return out


def compaction_at(state: LogState, message_ids: list[str]) -> Compaction | None:
    """The compaction in effect at the end of `message_ids` (the latest summary among
    them), as recorded in the log."""
    for message_id in reversed(message_ids):
        keep = state.compaction_kept(message_id)
        if keep is not None:
            return message_id, keep
    return None


@attrs.define
class HistoryCopy:
    # Log records: each message, then its parts (and the compaction after its summary).
    records: list[dict[str, Any]]
    # Catalog rows of the copy's runs: (runId, sessionId, started, ended).
    runs: list[tuple[str, str, int, int | None]]
    # The copy's usage and cost as the catalog's columns.
    totals: dict[str, Any]


def copy_history(
    messages: list[dict[str, Any]], session_id: str, compaction: Compaction | None
) -> HistoryCopy:
    """`messages` (wire messages with their parts, oldest first) as the log records of
    session `session_id`, with new ids."""
    new_message: dict[str, str] = {}
    new_run: dict[str, str] = {}
    runs: dict[str, tuple[str, str, int, int | None]] = {}
    usage: dict[str, int] = {}
    cost = Decimal(0)
    records: list[dict[str, Any]] = []
    summary, keep = compaction if compaction is not None else (None, [])
    message_ids = iter(ids.new_ids("msg", len(messages)))
    part_ids = iter(ids.new_ids("prt", sum(len(m.get("parts") or ()) for m in messages)))
    for wire in messages:
        old_id = wire["id"]
        meta = {k: v for k, v in wire.items() if k != "parts"}
        meta["id"] = new_message[old_id] = next(message_ids)
        meta["sessionId"] = session_id
        # Whether a message is hidden is the log's revert records' to say, not a field.
        meta.pop("reverted", None)
        parent = meta.pop("parentId", None)
        if parent in new_message:
            meta["parentId"] = new_message[parent]
        created = int(meta["time"]["created"])
        old_run = meta.get("runId")
        if old_run is not None:
            if old_run not in new_run:
                new_run[old_run] = ids.new_id("run")
            run_id = meta["runId"] = new_run[old_run]
            started = runs[run_id][2] if run_id in runs else created
            runs[run_id] = (run_id, session_id, started, meta["time"].get("completed"))
        for key, value in (meta.get("usage") or {}).items():
            usage[key] = usage.get(key, 0) + int(value)
        cost += Decimal(str(meta.get("cost") or 0))
        records.append({"k": "message", "message": meta, "at": created})
        records += (
            {"k": "part", "m": meta["id"], "part": {**part, "id": next(part_ids)}}
            for part in wire.get("parts") or []
        )
        if old_id == summary:
            records.append(
                {
                    "k": "compact",
                    "from": meta["id"],
                    "keep": [new_message[k] for k in keep if k in new_message],
                    "at": created,
                }
            )
    totals = LogState(usage=usage, cost=cost).catalog_totals()
    return HistoryCopy(records=records, runs=list(runs.values()), totals=totals)
