"""Closing runs that could not end: their daemon died, or the log could not take their
last writes. Holding the session's run lock, agentd appends the records that end them:
the message ends `interrupted`, open text parts are closed as they stand, unfinished
tool calls become errors, and the run gets its `end` record."""

from __future__ import annotations

from typing import Any

from agentd.storage.log import LogState

INTERRUPTED = "interrupted: agentd stopped during the run"


def interrupted_records(state: LogState, now: int) -> list[dict[str, Any]]:
    """Log records that close every run left open in `state`."""
    records: list[dict[str, Any]] = []
    for run_id in list(state.open_runs):
        for msg in state.messages.values():
            meta = msg.meta
            if meta.get("runId") != run_id or meta.get("role") != "assistant":
                continue
            if meta.get("time", {}).get("completed"):
                continue
            for part in msg.parts.values():
                closed = close_part(part, now, INTERRUPTED)
                if closed is not None:
                    records.append({"k": "part", "m": meta["id"], "part": closed})
            done = {**meta.get("time", {}), "completed": now}
            records.append(
                {
                    "k": "message",
                    "at": now,
                    "message": {**meta, "finishReason": "interrupted", "time": done},
                }
            )
        records.append({"k": "run", "run": run_id, "state": "end", "at": now})
    return records


def close_part(part: dict[str, Any], now: int, why: str) -> dict[str, Any] | None:
    """A part (wire form) closed at `now`: open text ends as it stands, a pending or
    running tool call becomes an error saying `why`. None: it was closed already."""
    kind = part.get("type")
    if kind in ("text", "reasoning") and not (part.get("time") or {}).get("end"):
        return {**part, "time": {**part.get("time", {}), "end": now}}
    if kind == "tool":
        state = part.get("state") or {}
        if state.get("status") in ("pending", "running"):
            start = (state.get("time") or {}).get("start", now)
            return {
                **part,
                "state": {
                    "status": "error",
                    "input": state.get("input", {}),
                    "error": why,
                    "time": {"start": start, "end": now},
                },
            }
    return None
