"""Ids: a prefix, then 12 hex digits of Unix milliseconds, a per-process monotonic
counter and randomness, so that ids sort by creation time as plain strings."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time

_counter = itertools.count(int.from_bytes(os.urandom(2), "big"))

ID_RE = re.compile(r"^(ses|msg|prt|run)_[0-9a-f]{12}[0-9a-z]{12}$")


def new_id(prefix: str) -> str:
    ms = time.time_ns() // 1_000_000
    count = next(_counter) & 0xFFFF
    return f"{prefix}_{ms:012x}{count:04x}{secrets.token_hex(4)}"


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` new ids at once (a session's copy): one call for the randomness, not one
    per id."""
    ms = time.time_ns() // 1_000_000
    noise = secrets.token_hex(4 * count)
    return [
        f"{prefix}_{ms:012x}{next(_counter) & 0xFFFF:04x}{noise[8 * i : 8 * i + 8]}"
        for i in range(count)
    ]


def is_valid_id(value: str, prefix: str) -> bool:
    """Ids from the editor are checked before they go near a path or a query."""
    return bool(ID_RE.match(value)) and value.startswith(prefix + "_")


def now_ms() -> int:
    return time.time_ns() // 1_000_000
