"""session/revert and session/unrevert: a session taken back to one of its messages, and
forward again.

A revert hides the messages after the one named (they stay in the log, marked by a
`revert` record, out of what the model is sent and of `session/messages`) and puts back
the files agentd changed in the workspace since. An unrevert undoes the latest revert,
as long as no message came after it.

Who changed what. The log says, in order, what agentd did to the workspace: each step
that may change files ran between two snapshots (`before`, `after`), and so did each
revert and unrevert that changed files. Between those intervals, and from the last one
until now, someone else changed the workspace (the user, another session, a build).
From the snapshot before the first step to undo (the target):
- the files to restore are those that differ across one of agentd's intervals; each
  goes back to what it is in the target (removed when it was not there);
- the conflicts are those among them that also differ across someone else's interval:
  they are left as they are unless `force`, so that nobody's edit is silently lost.
A step whose `after` is missing (the daemon died during it) lasts until the next
snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from agentd import ids
from agentd.config import Config
from agentd.errors import InvalidParams, SnapshotUnavailable
from agentd.protocol import types as t
from agentd.snapshots import ABSENT, Change, Restore, SnapshotError, WorkspaceStore
from agentd.storage.log import LogState, SessionLog
from agentd.storage.recovery import INTERRUPTED

logger = logging.getLogger(__name__)

# Tool errors that mean the call never ran (or was cut before a snapshot was on record).
_NOT_RUN = ("aborted", INTERRUPTED)


def workspace_store(config: Config, root: Path | str | None) -> WorkspaceStore:
    """The snapshot store of a session's workspace (`root`; None: the current directory,
    as the tools take it)."""
    root = Path(root or ".").absolute()
    return WorkspaceStore(
        config.data_dir, root, config.snapshots, private=(config.data_dir, config.state_dir)
    )


@attrs.frozen
class FilesOutcome:
    done: list[Restore]
    conflicts: list[tuple[str, str]]
    before: str | None = None
    after: str | None = None


def intervals(
    events: list[dict[str, Any]], current: str
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """agentd's intervals and everyone else's, as (tree, tree) pairs, from `events`
    (each with `before` and maybe `after`) up to the `current` tree."""
    ours: list[tuple[str, str]] = []
    theirs: list[tuple[str, str]] = []
    for i, event in enumerate(events):
        following = events[i + 1]["before"] if i + 1 < len(events) else current
        end = event.get("after") or following
        ours.append((event["before"], end))
        theirs.append((end, following))
    return ours, theirs


def _paths(
    diffs: dict[tuple[str, str], dict[str, Change]], pairs: Iterable[tuple[str, str]]
) -> set[str]:
    out: set[str] = set()
    for pair in pairs:
        out.update(diffs[pair])
    return out


def _restore_to(change: Change) -> Restore:
    """The action that brings a path back to the first side of `change`."""
    return Restore(change.path, change.old_mode, change.old_sha)


def revert_files(
    store: WorkspaceStore,
    target: str,
    events: list[dict[str, Any]],
    *,
    force: bool,
    dry_run: bool,
) -> FilesOutcome:
    """Blocking: the workspace's files agentd changed since `target` put back."""
    store.check()
    with store.locked():
        if not store.exists(target):
            raise SnapshotError("missing", f"the snapshot {target} is gone from {store.dir}")
        current = store.take_while_locked()
        ours, theirs = intervals(events, current)
        diffs = store.diff([*ours, *theirs, (target, current)])
        mine = _paths(diffs, ours)
        others = _paths(diffs, theirs)
        final = diffs[(target, current)]
        actions: list[Restore] = []
        conflicts: list[tuple[str, str]] = []
        for path in sorted(mine):
            change = final.get(path)
            if change is None:
                continue  # already as it was
            if path in others and not force:
                conflicts.append((path, "changed since agentd's snapshot by someone else"))
                continue
            actions.append(_restore_to(change))
        return _apply(store, target, actions, conflicts, current, dry_run, final)


def unrevert_files(
    store: WorkspaceStore, revert: dict[str, Any], *, force: bool, dry_run: bool
) -> FilesOutcome:
    """Blocking: the files a revert restored brought back to how it found them."""
    store.check()
    before, after = revert["before"], revert.get("after")
    if not after:
        raise SnapshotError(
            "missing", "no snapshot was taken after the revert: what it changed is unknown"
        )
    with store.locked():
        for tree in (before, after):
            if not store.exists(tree):
                raise SnapshotError("missing", f"the snapshot {tree} is gone from {store.dir}")
        current = store.take_while_locked()
        diffs = store.diff([(before, after), (after, current), (before, current)])
        # What the revert changed: its own snapshots, before and after.
        mine = diffs[(before, after)]
        others = diffs[(after, current)]
        final = diffs[(before, current)]
        actions: list[Restore] = []
        conflicts: list[tuple[str, str]] = []
        for path in sorted(mine):
            change = final.get(path)
            if change is None:
                continue
            if path in others and not force:
                conflicts.append((path, "changed since the revert"))
                continue
            actions.append(_restore_to(change))
        return _apply(store, before, actions, conflicts, current, dry_run, final)


def _blocked(
    actions: list[Restore], final: dict[str, Change]
) -> tuple[list[Restore], list[tuple[str, str]]]:
    """Writes a directory stands in the way of: one holding files that stay (someone
    else's) is never removed to make room, forced or not."""
    removed = {a.path for a in actions if a.deletes}
    staying = {
        path
        for path, change in final.items()
        if change.new_mode != ABSENT and path not in removed and "/" in path
    }
    parents: set[str] = set()
    for path in staying:
        parent = os.path.dirname(path)
        while parent and parent not in parents:
            parents.add(parent)
            parent = os.path.dirname(parent)
    kept = [a for a in actions if a.deletes or a.path not in parents]
    blocked = [
        (a.path, "a directory is in its place")
        for a in actions
        if not a.deletes and a.path in parents
    ]
    return kept, blocked


def _apply(
    store: WorkspaceStore,
    target: str,
    actions: list[Restore],
    conflicts: list[tuple[str, str]],
    current: str,
    dry_run: bool,
    final: dict[str, Change],
) -> FilesOutcome:
    actions, blocked = _blocked(actions, final)
    conflicts = sorted(conflicts + blocked)
    if dry_run:
        return FilesOutcome(actions, conflicts, current)
    keep = store.directories(target) if any(a.deletes for a in actions) else set()
    outcome = store.restore(actions, keep)
    try:
        after: str | None = store.take_after_restore([a.path for a in outcome.done])
    except SnapshotError as exc:
        logger.warning("no snapshot after the revert: %s", exc.message)
        after = None
    return FilesOutcome(outcome.done, sorted(conflicts + outcome.failed), current, after)


# --- what the session layer calls ---------------------------------------------------------


def _unavailable(exc: SnapshotError, session_id: str) -> SnapshotUnavailable:
    return SnapshotUnavailable(
        f"cannot restore the files: {exc.message}",
        data={"sessionId": session_id, "reason": exc.reason},
    )


async def _unsnapshotted(log: SessionLog, state: LogState, later: list[str]) -> str | None:
    """A message among `later` whose tools may have changed files with no snapshot on
    record (written before agentd kept snapshots): its files cannot be restored."""
    from agentd.tools import BUILTIN_TOOLS

    changing = {name for name, spec in BUILTIN_TOOLS.items() if spec.writes or spec.runs_commands}
    stepped = {e["m"] for e in state.workspace if e["kind"] == "step"}
    candidates = [i for i in later if state.messages[i].meta.get("role") == "assistant"]
    for wire in await log.read_messages([i for i in candidates if i not in stepped]):
        for part in wire.get("parts") or []:
            if part.get("type") != "tool" or part.get("tool") not in changing:
                continue
            status = (part.get("state") or {}).get("status")
            error = (part.get("state") or {}).get("error")
            if status == "completed" or (status == "error" and error not in _NOT_RUN):
                return str(wire["id"])
    return None


async def revert(
    log: SessionLog, root: str | None, config: Config, p: t.SessionRevertParams
) -> t.SessionRevertResult:
    """With the session held (no run in any daemon): hide the messages after
    `p.message_id` and restore the files."""
    state = await log.read()
    sid = p.session_id
    field = {"field": "messageId"}
    if p.message_id not in state.messages:
        raise InvalidParams(
            f"params.messageId: no message {p.message_id} in this session", data=field
        )
    if p.message_id in state.reverted:
        raise InvalidParams(
            f"params.messageId: message {p.message_id} is reverted; name a message before "
            "it, or session/unrevert first",
            data=field,
        )
    order = list(state.messages)
    after = order[order.index(p.message_id) + 1 :]
    later = [i for i in after if i not in state.reverted]
    if not later:
        raise InvalidParams(
            f"params.messageId: nothing comes after message {p.message_id}", data=field
        )
    later_set = set(after)
    first = next(
        (
            k
            for k, e in enumerate(state.workspace)
            if e["kind"] == "step" and e.get("m") in later_set
        ),
        None,
    )
    events = state.workspace[first:] if first is not None else []
    store = workspace_store(config, root)
    for event in events:
        if event["kind"] == "step" and not event.get("before"):
            error = event.get("error") or {}
            raise _unavailable(
                SnapshotError(
                    error.get("reason", "missing"),
                    f"no snapshot was taken before a step of message {event['m']}: "
                    f"{error.get('message', 'it was not recorded')}",
                ),
                sid,
            )
        if event.get("ws") and Path(event["ws"]) != store.workspace:
            raise _unavailable(
                SnapshotError(
                    "workspace-changed",
                    f"the steps ran in {event['ws']}, the session's workspace is now "
                    f"{store.workspace}",
                ),
                sid,
            )
    legacy = await _unsnapshotted(log, state, later)
    if legacy is not None:
        raise _unavailable(
            SnapshotError(
                "missing", f"message {legacy} changed files before agentd kept snapshots"
            ),
            sid,
        )
    files = FilesOutcome([], [])
    if events:
        try:
            files = await asyncio.to_thread(
                revert_files,
                store,
                events[0]["before"],
                events,
                force=bool(p.force),
                dry_run=bool(p.dry_run),
            )
        except SnapshotError as exc:
            raise _unavailable(exc, sid) from None
    if not p.dry_run:
        rec: dict[str, Any] = {"k": "revert", "to": p.message_id, "messages": later}
        if files.before is not None:
            rec.update(ws=str(store.workspace), before=files.before, after=files.after)
        rec["at"] = ids.now_ms()
        log.append(rec)
        await log.flush()
    return _result(later, files, p.dry_run)


async def unrevert(
    log: SessionLog, root: str | None, config: Config, p: t.SessionUnrevertParams
) -> t.SessionRevertResult:
    """With the session held: undo the latest revert, files and messages."""
    state = await log.read()
    if not state.pending_reverts:
        reverted = bool(state.reverted)
        why = (
            "a message came after the last revert: what it reverted stays reverted"
            if reverted
            else "the session has no revert to undo"
        )
        raise InvalidParams(
            f"params.sessionId: nothing to unrevert: {why}",
            data={"field": "sessionId", "reason": "nothing-to-unrevert"},
        )
    last = state.pending_reverts[-1]
    files = FilesOutcome([], [])
    store = workspace_store(config, root)
    if last.get("before"):
        try:
            files = await asyncio.to_thread(
                unrevert_files, store, last, force=bool(p.force), dry_run=bool(p.dry_run)
            )
        except SnapshotError as exc:
            raise _unavailable(exc, p.session_id) from None
    messages = list(last["messages"])
    if not p.dry_run:
        rec: dict[str, Any] = {"k": "unrevert", "messages": messages}
        if files.before is not None:
            rec.update(ws=str(store.workspace), before=files.before, after=files.after)
        rec["at"] = ids.now_ms()
        log.append(rec)
        await log.flush()
    return _result(messages, files, p.dry_run)


def _display(path: str) -> str:
    # A file name need not be UTF-8; the wire's strings must be.
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _result(
    messages: list[str], files: FilesOutcome, dry_run: bool | None
) -> t.SessionRevertResult:
    return t.SessionRevertResult(
        messages=messages,
        files=[
            t.RevertedFile(path=_display(a.path), action="delete" if a.deletes else "restore")
            for a in sorted(files.done, key=lambda a: a.path)
        ],
        conflicts=[t.RevertConflict(path=_display(p), reason=why) for p, why in files.conflicts],
        dry_run=True if dry_run else None,
    )
