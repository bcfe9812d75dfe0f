"""The tool-context store: while a run is active, `<dir>/<sessionScopeKey>.json` tells
editor-side tools whom they work for. Never holds the access token.

The directory is 0700 and files 0600 whatever the umask; writes are atomic (temporary
file in the same directory, then rename). A file is removed when its run ends and at
shutdown; files whose `pid` is no longer alive are swept when a daemon starts.

`read(key)` is the reader API for editor-side tools written in Python.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from agentd.keys import is_scope_key

logger = logging.getLogger(__name__)

ENV_DIR = "AGENTD_TOOL_CONTEXT_DIR"
ENV_KEY = "AGENTD_SESSION_SCOPE_KEY"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ToolContextStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare_dir(self) -> None:
        """Create the directory, 0700 whatever the umask."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)

    def prepare(self) -> int:
        """Create the directory and sweep files of dead daemons. Returns how many stale
        files were removed. Runs once at startup."""
        self.prepare_dir()
        removed = 0
        for entry in os.scandir(self.directory):
            if entry.name.startswith(".tmp-"):
                # An interrupted write of ours; tmp names carry the pid.
                owner = entry.name.split("-")[2] if entry.name.count("-") >= 2 else "0"
                if not (owner.isdigit() and _pid_alive(int(owner))):
                    Path(entry.path).unlink(missing_ok=True)
                continue
            if not entry.name.endswith(".json"):
                continue
            try:
                with open(entry.path, encoding="utf-8") as f:
                    pid = int(json.load(f).get("pid", 0))
            except (OSError, ValueError, AttributeError, TypeError):
                pid = 0
            if not _pid_alive(pid) or pid == os.getpid():
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed

    def path_for(self, scope_key: str) -> Path:
        if not is_scope_key(scope_key):
            raise ValueError("invalid sessionScopeKey")
        return self.directory / f"{scope_key}.json"

    async def write(self, context: dict[str, Any]) -> None:
        target = self.path_for(context["sessionScopeKey"])
        tmp = self.directory / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
        data = json.dumps(context, indent=2, sort_keys=True) + "\n"
        # O_EXCL + explicit mode: the file is 0600 from its first byte, whatever the umask.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        try:
            async with aiofiles.open(fd, "w", encoding="utf-8") as f:
                await f.write(data)
            await aiofiles.os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def remove(self, scope_key: str) -> None:
        try:
            await aiofiles.os.remove(self.path_for(scope_key))
        except FileNotFoundError:
            pass

    async def get(self, scope_key: str) -> dict[str, Any] | None:
        try:
            path = self.path_for(scope_key)
        except ValueError:
            return None
        try:
            async with aiofiles.open(path, encoding="utf-8") as f:
                data = json.loads(await f.read())
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(data, dict) or not _pid_alive(int(data.get("pid", 0))):
            return None
        return data


def default_dir() -> Path:
    """The directory a daemon with the same environment would use."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    state = os.environ.get("AGENTD_STATE_DIR")
    if not state:
        import platformdirs

        state = platformdirs.user_state_dir("agentd")
    return Path(state) / "tool-context"


def read(
    scope_key: str | None = None, directory: Path | str | None = None
) -> dict[str, Any] | None:
    """The tool context of the active run for `scope_key` (default: $AGENTD_SESSION_SCOPE_KEY),
    or None when no run is active for it. For editor-side tools written in Python."""
    scope_key = scope_key or os.environ.get(ENV_KEY)
    if not scope_key or not is_scope_key(scope_key):
        return None
    path = Path(directory) if directory else default_dir()
    try:
        with open(path / f"{scope_key}.json", encoding="utf-8") as f:
            data = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(data, dict) or not _pid_alive(int(data.get("pid", 0))):
        return None
    return data
