"""Long sessions without minutes of chatting: copies of a real turn's log records."""

from __future__ import annotations

import re
from pathlib import Path

_ID = re.compile(rb"(?:msg|prt|run)_[0-9a-f]{12}[0-9a-z]{12}")


def grow_session(tmp: Path, sid: str, turns: int, *, mark: bool = False) -> None:
    """Append `turns` copies of the session's last turn to its log, with fresh ids: what
    `turns` real chats would have written. With `mark`, each copy's texts end with
    ` #<n>` so that tests can tell the copies apart."""
    log = tmp / "data" / "sessions" / sid / "log.jsonl"
    lines = log.read_bytes().splitlines()
    run_start = max(i for i, line in enumerate(lines) if b'"state":"start"' in line)
    turn = b"\n".join(lines[run_start:]) + b"\n"
    ids = sorted(set(_ID.findall(turn)))
    with log.open("ab") as f:
        for n in range(turns):
            copy = turn
            for k, old in enumerate(ids):
                new = old[:4] + b"%012x" % (0x10000000000 + n) + b"%012x" % k
                copy = copy.replace(old, new)
            if mark:
                copy = re.sub(rb'("text":"[^"]*)"', rb'\1 #%d"' % n, copy)
            f.write(copy)
