"""The derived keys of a session: actorKey, projectKey, sessionScopeKey.

Each is made of `[A-Za-z0-9._-]`, at most 200 characters, and is a safe file name.
A component that is not safe as it is (other characters, too long, a leading `.` or
`_`) is replaced by `_` + 16 hex digits of its SHA-256: stable, and impossible to forge
with a safe component, because safe components never start with `_`. The scope key
joins the three components with `.`, which safe components never contain, so distinct
triples give distinct keys.
"""

from __future__ import annotations

import hashlib
import re
import secrets

_SAFE = re.compile(r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,63}$")
SCOPE_KEY_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_HASHED = re.compile(r"^_[0-9a-f]{16}$")


def safe_component(value: str) -> str:
    if _SAFE.match(value):
        return value
    return "_" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def is_component(value: str) -> bool:
    """A component agentd makes: a safe value as it is, or the hash of another."""
    return bool(_SAFE.match(value) or _HASHED.match(value))


def actor_key(user_id: str | None) -> str:
    return safe_component(user_id) if user_id else "anonymous"


def project_key(project_id: str | None) -> str:
    return safe_component(project_id) if project_id else "default"


def session_scope_key(actor: str, project: str, client_session_id: str) -> str:
    return f"{actor}.{project}.{safe_component(client_session_id)}"


def is_scope_key(value: str) -> bool:
    return bool(SCOPE_KEY_RE.match(value)) and value not in {".", ".."}


def new_client_session_id() -> str:
    return "agent-" + secrets.token_hex(6)


def new_trace_id() -> str:
    return "trace-" + secrets.token_hex(6)
