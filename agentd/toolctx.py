"""The tool-context store: while a run is active, `<dir>/<sessionScopeKey>.json` tells
editor-side tools whom they work for. Never holds the access token.

Files, all 0600 in a 0700 directory whatever the umask:

- `<key>.<runId>.run`, one per active run: its context, written to a temporary file
  and renamed into place, and held with an exclusive `flock` by the daemon running it
  from before the rename until the run ends. The OS drops the lock when that process
  dies, so "active" means "locked", never "a process with that pid exists" (pids are
  reused; a daemon killed with -9 cannot remove its files).
- `<key>.json`: a hard link to the newest active record of the key (newest by
  `updatedAt`, then `runId`), swapped in atomically (link to a temporary name, rename),
  or absent when no run of the key is active. Two daemons running the same key (separate
  data dirs, one state dir) each keep their record; when the newer run ends the older
  one's record is linked back. Being the same inode, `<key>.json` carries the record's
  lock: a process that can take a shared `flock` on it knows the run is gone.

Every change to the names (publish, release, sweep) happens under an exclusive `flock`
on the directory itself, so the link always follows the records; readers take no lock
and answer from the records alone (`read`), so a `<key>.json` left behind by a killed
daemon never misleads them.

The directory is refused, and tool contexts are unavailable for the daemon's life (runs
work without them), when it is a symlink, not a directory, not owned by this user, or
writable by group or others when agentd did not create it. Entries in it are never
followed or opened unless they are regular files of this user (a FIFO, socket, directory
or symlink under a name of ours is skipped and reported).

`read(key)` is the reader API for editor-side tools written in Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from agentd.ids import is_valid_id
from agentd.keys import is_scope_key
from agentd.protocol.converter import unstructure
from agentd.protocol.types import ToolContext

logger = logging.getLogger(__name__)

ENV_DIR = "AGENTD_TOOL_CONTEXT_DIR"
ENV_KEY = "AGENTD_SESSION_SCOPE_KEY"

RECORD_SUFFIX = ".run"
CONTEXT_SUFFIX = ".json"
TMP_PREFIX = ".tmp-"
# A context is a few hundred bytes; anything bigger under our names is not ours.
MAX_CONTEXT_BYTES = 64 * 1024
# Holding the directory lock takes microseconds; a holder that keeps it this long is
# stopped or hostile, and a run goes on without its context rather than wait.
LOCK_WAIT_S = 2.0

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class DirectoryRefused(Exception):
    """The tool-context directory cannot be trusted; the message says why."""


class _Held(NamedTuple):
    fd: int
    key: str
    name: str


# --- names ---------------------------------------------------------------------------


def _record_name(scope_key: str, run_id: str) -> str:
    return f"{scope_key}.{run_id}{RECORD_SUFFIX}"


def _key_of(name: str) -> str | None:
    """The scope key a name of ours belongs to (a record or a published context), or
    None for any other name."""
    if name.startswith(TMP_PREFIX):
        return None
    if name.endswith(RECORD_SUFFIX):
        key, _, run_id = name[: -len(RECORD_SUFFIX)].rpartition(".")
        return key if is_scope_key(key) and is_valid_id(run_id, "run") else None
    if name.endswith(CONTEXT_SUFFIX):
        key = name[: -len(CONTEXT_SUFFIX)]
        return key if is_scope_key(key) else None
    return None


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def _untrusted(st: os.stat_result) -> str | None:
    """Why an entry under one of our names is not ours to open, or None."""
    if not stat.S_ISREG(st.st_mode):
        return _kind(st.st_mode)
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}"
    return None


# --- the directory -------------------------------------------------------------------


def open_dir(directory: Path, *, create: bool) -> int:
    """A descriptor of the directory once it is known to be ours; every later access
    goes through it (`dir_fd`), so swapping the path for a symlink afterwards changes
    nothing. Raises DirectoryRefused, or OSError when it cannot be created (or, without
    `create`, does not exist)."""
    created = False
    if create:
        directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.mkdir(directory, 0o700)
            created = True
        except FileExistsError:
            pass
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode):
        raise DirectoryRefused(f"{directory} is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise DirectoryRefused(f"{directory} is {_kind(st.st_mode)}, not a directory")
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise DirectoryRefused(
                f"{directory} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022 and not created:
            raise DirectoryRefused(
                f"{directory} is writable by group or others (mode {mode:04o}): files in it "
                f"may not be ours; `chmod 700` it once it is checked"
            )
        if create and mode != 0o700:
            os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _dir_locked(dir_fd: int, mutex: threading.Lock) -> Iterator[None]:
    """Exclusive over every process that changes names in the directory. flock is per
    open file description, so threads of one process are ordered by `mutex` first."""
    with mutex:
        deadline = time.monotonic() + LOCK_WAIT_S
        pause = 0.001
        while True:
            try:
                fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"another process held the tool-context directory's lock for "
                        f"{LOCK_WAIT_S:g} s"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        try:
            yield
        finally:
            fcntl.flock(dir_fd, fcntl.LOCK_UN)


# --- reading -------------------------------------------------------------------------


def _is_held(fd: int) -> bool:
    """True while the run's daemon holds its exclusive lock. Probes with a shared lock
    so that probes never make each other look alive."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _open_entry(dir_fd: int, name: str) -> tuple[int, os.stat_result] | None:
    """Open a regular file of this user without following a symlink or blocking on a
    FIFO; None for anything else (or when it is gone)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if _untrusted(st) is not None:
            return None
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    after = os.fstat(fd)
    if _untrusted(after) is not None or (after.st_dev, after.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        return None
    return fd, after


def _load(fd: int, st: os.stat_result, key: str, run_id: str | None) -> dict[str, Any] | None:
    if st.st_size > MAX_CONTEXT_BYTES:
        return None
    try:
        data = json.loads(os.read(fd, MAX_CONTEXT_BYTES + 1))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("sessionScopeKey") != key:
        return None
    if run_id is not None and data.get("runId") != run_id:
        return None
    return data


def _order(context: dict[str, Any]) -> tuple[int, str]:
    at = context.get("updatedAt")
    return (at if isinstance(at, int) else 0, str(context.get("runId", "")))


class _Live(NamedTuple):
    order: tuple[int, str]
    name: str
    ino: tuple[int, int]
    context: dict[str, Any]


def _names(dir_fd: int) -> list[str]:
    # scandir(fd) reads through a dup, which shares the directory offset with every
    # other dup: concurrent listings get a descriptor of their own.
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        with os.scandir(fd) as entries:
            return [entry.name for entry in entries]
    finally:
        os.close(fd)


def _records(dir_fd: int, key: str) -> list[str]:
    return [n for n in _names(dir_fd) if n.endswith(RECORD_SUFFIX) and _key_of(n) == key]


def _live_records(dir_fd: int, key: str, names: list[str]) -> tuple[list[_Live], list[str]]:
    """The key's records whose daemon holds them, and the names of those it does not."""
    live: list[_Live] = []
    dead: list[str] = []
    for name in names:
        opened = _open_entry(dir_fd, name)
        if opened is None:
            continue
        fd, st = opened
        try:
            if not _is_held(fd):
                dead.append(name)
                continue
            run_id = name[: -len(RECORD_SUFFIX)].rpartition(".")[2]
            context = _load(fd, st, key, run_id)
            if context is not None:
                live.append(_Live(_order(context), name, (st.st_dev, st.st_ino), context))
        finally:
            os.close(fd)
    return live, dead


def _read_at(dir_fd: int, scope_key: str) -> dict[str, Any] | None:
    if not is_scope_key(scope_key):
        return None
    try:
        names = _records(dir_fd, scope_key)
    except OSError:
        return None
    live, _ = _live_records(dir_fd, scope_key, names)
    return max(live, key=lambda r: (r.order, r.name)).context if live else None


def default_dir() -> Path:
    """The directory a daemon with the same environment would use."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    state = os.environ.get("AGENTD_STATE_DIR")
    if not state:
        import platformdirs

        state = platformdirs.user_state_dir("agentd")
    return Path(state) / "tool-context"


def lookup(
    scope_key: str | None = None, directory: Path | str | None = None
) -> tuple[dict[str, Any] | None, str]:
    """(the context, "") or (None, why there is none)."""
    scope_key = scope_key or os.environ.get(ENV_KEY)
    if not scope_key or not is_scope_key(scope_key):
        return None, "not a sessionScopeKey"
    path = Path(directory) if directory else default_dir()
    try:
        dir_fd = open_dir(path, create=False)
    except FileNotFoundError:
        return None, "no active run for that key"
    except DirectoryRefused as exc:
        return None, f"tool-context directory refused: {exc}"
    except OSError as exc:
        return None, f"tool-context directory unreadable: {exc.strerror or exc}"
    try:
        context = _read_at(dir_fd, scope_key)
    finally:
        os.close(dir_fd)
    return (context, "") if context is not None else (None, "no active run for that key")


def read(
    scope_key: str | None = None, directory: Path | str | None = None
) -> dict[str, Any] | None:
    """The tool context of the newest active run for `scope_key` (default:
    $AGENTD_SESSION_SCOPE_KEY), or None when no run is active for it or the directory
    is not one agentd would use. For editor-side tools written in Python."""
    return lookup(scope_key, directory)[0]


# --- the store -----------------------------------------------------------------------


class ToolContextStore:
    """One daemon's side of the directory. Blocking work runs in threads; the async
    methods never raise for a tool-context problem (it is logged: a run goes on without
    its context)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Why tool contexts are unavailable, once the directory was refused.
        self.unavailable: str | None = None
        self._dir_fd: int | None = None
        self._opening = threading.Lock()
        self._mutex = threading.Lock()
        self._held: dict[str, _Held] = {}
        # Publications still in their thread, so a release never overtakes one.
        self._publishing: dict[str, asyncio.Future[None]] = {}

    def run_paths(self, scope_key: str, run_id: str) -> tuple[Path, ...]:
        """Where a run's own context is read (`<key>.json` and its record): what a
        sandboxed command of that run may still see in this directory."""
        return (
            self.directory / f"{scope_key}{CONTEXT_SUFFIX}",
            self.directory / _record_name(scope_key, run_id),
        )

    def prepare_dir(self) -> None:
        """Create (0700 whatever the umask) and check the directory, once. A refusal
        is remembered in `unavailable`, not raised."""
        with self._opening:
            if self._dir_fd is not None or self.unavailable is not None:
                return
            try:
                self._dir_fd = open_dir(self.directory, create=True)
            except DirectoryRefused as exc:
                self.unavailable = str(exc)
            except OSError as exc:
                self.unavailable = f"cannot create {self.directory}: {exc.strerror or exc}"
            if self.unavailable is not None:
                logger.warning("tool contexts are unavailable: %s", self.unavailable)

    def prepare(self) -> int:
        """Check the directory and sweep it: records no live daemon holds and links to
        them are removed, interrupted writes too, and each key's link is made to follow
        its records. Anything under our names that is not a regular file of this user is
        skipped and reported. Returns how many files were removed. Runs once at startup
        and never raises."""
        self.prepare_dir()
        if self._dir_fd is None:
            return 0
        try:
            with _dir_locked(self._dir_fd, self._mutex):
                return self._sweep(self._dir_fd)
        except (OSError, TimeoutError) as exc:
            logger.warning("tool-context sweep skipped: %s", exc)
            return 0

    def _sweep(self, dir_fd: int) -> int:
        removed = 0
        keys: dict[str, list[str]] = {}
        skipped: list[str] = []
        for name in _names(dir_fd):
            key = _key_of(name)
            if key is None and not name.startswith(TMP_PREFIX):
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            why = _untrusted(st)
            if why is not None:
                skipped.append(f"{name} ({why})")
                continue
            if key is None:
                # `.tmp-<pid>-…`: a write cut short. Ours are made under the lock we
                # hold, so only another daemon's unlocked write (an older agentd) can be
                # in flight: its pid is in the name.
                owner = name.split("-")[1] if name.count("-") >= 2 else ""
                if not (owner.isdigit() and _pid_alive(int(owner))) or owner == str(os.getpid()):
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=dir_fd)
                continue
            records = keys.setdefault(key, [])
            if name.endswith(RECORD_SUFFIX):
                records.append(name)
        if skipped:
            logger.warning(
                "tool-context sweep skipped %d entries that are not regular files of this "
                "user (left as they are): %s",
                len(skipped),
                ", ".join(sorted(skipped)),
            )
        for key, records in keys.items():
            try:
                removed += self._settle(dir_fd, key, records)
            except OSError as exc:
                logger.warning("tool context %s not swept: %s", key, exc)
        return removed

    def _settle(self, dir_fd: int, key: str, records: list[str]) -> int:
        """Under the directory lock: remove the key's dead records, and make `<key>.json`
        the newest live record, or remove it when there is none. Returns files removed."""
        live, dead = _live_records(dir_fd, key, records)
        removed = 0
        for name in dead:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
                removed += 1
        link = key + CONTEXT_SUFFIX
        try:
            current = os.stat(link, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if live:
            newest = max(live, key=lambda r: (r.order, r.name))
            if current is None or (current.st_dev, current.st_ino) != newest.ino:
                self._link(dir_fd, newest.name, link)
        elif current is not None and _untrusted(current) is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link, dir_fd=dir_fd)
                removed += 1
        return removed

    @staticmethod
    def _link(dir_fd: int, source: str, target: str) -> None:
        tmp = f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        os.link(source, tmp, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        try:
            # A rename over a directory fails (a FIFO, socket or symlink is replaced:
            # the name is ours). Readers use the records, so they still find the run.
            os.replace(tmp, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            logger.warning("tool context %s not published: %s", target, exc.strerror or exc)
        finally:
            # Still there when the rename failed, or when both names were one inode
            # already (rename is then a no-op).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)

    # --- a run's context -------------------------------------------------------------

    async def write(self, context: ToolContext) -> None:
        """Publish a run's context; it stays until `release(runId)`. A failure is logged
        and the run goes on without a context."""
        run_id = context.run_id
        task = asyncio.ensure_future(asyncio.to_thread(self._publish, context))
        self._publishing[run_id] = task
        # Cancelled while the thread runs: the thread finishes, and release waits for it.
        await asyncio.shield(task)

    def _publish(self, context: ToolContext) -> None:
        dir_fd = self._dir_fd
        key = context.session_scope_key
        run_id = context.run_id
        if dir_fd is None:
            return
        if not is_scope_key(key) or not is_valid_id(run_id, "run"):
            logger.warning("tool context not written: invalid key or run id")
            return
        record = json.dumps(unstructure(context), indent=2, sort_keys=True)
        data = (record + "\n").encode("utf-8")
        name = _record_name(key, run_id)
        try:
            with _dir_locked(dir_fd, self._mutex):
                tmp = f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
                # O_EXCL + explicit mode + fchmod: 0600 from the first byte, whatever
                # the umask. Locked before it has its name, so it is never seen unheld.
                fd = os.open(
                    tmp,
                    os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=dir_fd,
                )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.fchmod(fd, 0o600)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except BaseException:
                    os.close(fd)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp, dir_fd=dir_fd)
                    raise
                self._held[run_id] = _Held(fd, key, name)
                self._settle(dir_fd, key, _records(dir_fd, key))
        except (OSError, TimeoutError) as exc:
            logger.warning("tool context for %s not written: %s", key, exc)

    async def release(self, run_id: str) -> None:
        """The run ended: its record goes, and `<key>.json` falls back to the key's
        newest other live run (or goes). Never raises."""
        task = self._publishing.pop(run_id, None)
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        if run_id in self._held:
            await asyncio.shield(asyncio.to_thread(self._release, run_id))

    def _release(self, run_id: str) -> None:
        held = self._held.pop(run_id, None)
        if held is None or self._dir_fd is None:
            return
        try:
            with _dir_locked(self._dir_fd, self._mutex):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(held.name, dir_fd=self._dir_fd)
                self._settle(self._dir_fd, held.key, _records(self._dir_fd, held.key))
        except (OSError, TimeoutError) as exc:
            # Closing below still ends the run's lock: readers see it as gone, and the
            # next sweep removes what is left.
            logger.warning("tool context for %s not released cleanly: %s", held.key, exc)
        finally:
            os.close(held.fd)

    async def discard_stale(self, scope_key: str) -> None:
        """Remove what dead runs of the key left (a live run's context, another
        daemon's included, stays). Never raises."""
        if self._dir_fd is None or not is_scope_key(scope_key):
            return
        await asyncio.to_thread(self._discard_stale, scope_key)

    def _discard_stale(self, scope_key: str) -> None:
        assert self._dir_fd is not None
        try:
            with _dir_locked(self._dir_fd, self._mutex):
                self._settle(self._dir_fd, scope_key, _records(self._dir_fd, scope_key))
        except (OSError, TimeoutError) as exc:
            logger.warning("tool context for %s not swept: %s", scope_key, exc)

    async def get(self, scope_key: str) -> dict[str, Any] | None:
        """What `read` answers, through this daemon's checked directory."""
        if self._dir_fd is None:
            return None
        return await asyncio.to_thread(_read_at, self._dir_fd, scope_key)


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
