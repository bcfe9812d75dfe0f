"""Snapshots of a workspace, the record `session/revert` restores files from.

Each workspace gets a git object store of agentd's own, under the data dir
(`snapshots/<hash of the workspace's real path>`), used with the workspace as its work
tree: `git --git-dir=<store> --work-tree=<workspace>`. A snapshot is a git tree: the
store's own index is brought up to date with the workspace (`ls-files` names what is
new, changed or gone; agentd reads only those and writes their blobs and index entries)
and written out (`write-tree`). Nothing else is kept: no commits, no refs; the log
records which tree was taken when.

- git never reads a file's bytes into the store: it would follow a directory that
  another process swapped for a symbolic link between its look and its read, and take
  a file outside the workspace in. agentd opens each path one component at a time with
  O_NOFOLLOW, as its tools do, and leaves out files with other hard links, as they do.

- The user's `.git` is never read or written: git never takes in a `.git` entry, and
  every command names agentd's store explicitly. Nested repositories (a directory with
  its own `.git`) are not snapshotted, and nor is what the workspace's `.gitignore`
  files exclude; agentd's own data and state directories, when inside the workspace,
  are excluded too.
- The user's git configuration does not apply (no global or system file, no
  `.gitattributes` filters or line-ending conversion: bytes are stored as they are).
- One snapshot or restore at a time per workspace, across agentd processes (a lock file
  in the store): two sessions on one workspace share its store.
- Restoring never follows a symbolic link: every path is walked from the workspace root
  one directory at a time with O_NOFOLLOW, and files are replaced by rename, never
  written through, so a link the model left (to outside the workspace) is replaced or
  removed, not written into.

Every function here blocks (git processes, file I/O); callers run them in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs

from agentd import file_modes, ids
from agentd.config import SnapshotsConfig

logger = logging.getLogger(__name__)

# A git command that runs longer than this is killed and the snapshot fails.
GIT_TIMEOUT_S = 300.0
# The tree cache: the tree of the index as last written, valid while nothing changed.
_TREE_CACHE = "agentd-tree"
_LOCK = "agentd.lock"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
NULL_SHA = "0" * 40
_creating = threading.Lock()
ABSENT = "000000"
SYMLINK = "120000"
REGULAR = "100644"
EXECUTABLE = "100755"
GITLINK = "160000"


class SnapshotError(Exception):
    """The workspace could not be snapshotted (or restored from a snapshot). `reason`
    is a word an editor can act on: `snapshots-off`, `not-a-directory`, `no-git`,
    `too-large`, `git-failed`, `missing`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@attrs.frozen
class Change:
    """One path that differs between two trees: its mode and blob on each side
    (`ABSENT` / `NULL_SHA` where it does not exist)."""

    path: str
    old_mode: str
    old_sha: str
    new_mode: str
    new_sha: str


@attrs.frozen
class Restore:
    """What a restore does to one path: write the blob (`mode`, `sha`), or, with mode
    `ABSENT`, remove the file."""

    path: str
    mode: str
    sha: str

    @property
    def deletes(self) -> bool:
        return self.mode == ABSENT


@attrs.define
class RestoreOutcome:
    done: list[Restore] = attrs.Factory(list)
    # Paths left as they are, and why (a directory in the way, a parent that is not a
    # directory, a file system error).
    failed: list[tuple[str, str]] = attrs.Factory(list)


def store_dir(data_dir: Path, workspace: Path) -> Path:
    real = os.path.realpath(workspace)
    digest = hashlib.sha256(os.fsencode(real)).hexdigest()[:24]
    return data_dir / "snapshots" / digest


def _exclude_line(relative: str) -> str:
    """A gitignore line matching exactly `relative` (a directory), anchored at the root."""
    escaped = "".join("\\" + c if c in "\\*?[]!# " else c for c in relative)
    return f"/{escaped}/"


class WorkspaceStore:
    """One workspace's snapshots: take them, compare them, restore files from them."""

    def __init__(
        self,
        data_dir: Path,
        workspace: Path,
        limits: SnapshotsConfig,
        private: Iterable[Path] = (),
    ) -> None:
        self.workspace = Path(os.path.realpath(workspace))
        self.dir = store_dir(data_dir, workspace)
        self.limits = limits
        # agentd's own directories: never snapshotted, never restored.
        self._private = [Path(os.path.realpath(p)) for p in private]
        self._git = shutil.which("git")
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # The user's configuration, excludes and attributes files do not apply.
            "HOME": str(self.dir),
            "XDG_CONFIG_HOME": str(self.dir),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_ATTR_NOSYSTEM": "1",
            # Paths are file names, never patterns (a file may be called `*`).
            "GIT_LITERAL_PATHSPECS": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
        }

    # --- git -----------------------------------------------------------------------------

    def _run(self, *args: str, stdin: bytes | None = None, tolerate: int = 0) -> bytes:
        """Run git on the store; a status above `tolerate` raises SnapshotError."""
        assert self._git is not None
        try:
            done = subprocess.run(
                [self._git, f"--git-dir={self.dir}", f"--work-tree={self.workspace}", *args],
                input=stdin,
                capture_output=True,
                env=self._env,
                cwd=self.workspace,
                timeout=GIT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SnapshotError(
                "git-failed", f"git {args[0]} took more than {GIT_TIMEOUT_S:.0f} s"
            ) from None
        except OSError as exc:
            raise SnapshotError("git-failed", f"cannot run git: {exc.strerror}") from None
        if done.returncode > tolerate or done.returncode < 0:
            why = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SnapshotError(
                "git-failed", f"git {args[0]} failed: {why[-1] if why else done.returncode}"
            )
        if done.returncode:
            logger.warning(
                "git %s: %s", args[0], done.stderr.decode("utf-8", "replace").strip()[-2000:]
            )
        return done.stdout

    def check(self) -> None:
        """Raise SnapshotError when this workspace cannot be snapshotted here."""
        if not self.limits.enabled:
            raise SnapshotError(
                "snapshots-off", "snapshots are off in the configuration ([snapshots] enabled)"
            )
        if not self.workspace.is_dir():
            raise SnapshotError(
                "not-a-directory", f"the workspace {self.workspace} is not a directory"
            )
        if self._git is None:
            raise SnapshotError(
                "no-git", "git is not installed: agentd keeps its snapshots with git"
            )

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The store to itself, across threads and processes (flock is per open file)."""
        import fcntl

        self._ensure()
        fd = os.open(self.dir / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Held by nobody now: one left behind was a git killed with agentd.
            (self.dir / "index.lock").unlink(missing_ok=True)
            yield
        finally:
            os.close(fd)

    def _ensure(self) -> None:
        """Create the store (once: two threads wait for each other, two processes race
        and one rename wins)."""
        if (self.dir / "HEAD").exists():
            return
        with _creating:
            if not (self.dir / "HEAD").exists():
                self._create()

    def _create(self) -> None:
        file_modes.make_private_dir(self.dir.parent)
        temp = self.dir.with_name(f"{self.dir.name}.{secrets.token_hex(4)}.new")
        assert self._git is not None
        try:
            subprocess.run(
                # No template: no sample hooks, nothing agentd does not use.
                [self._git, "init", "-q", "--bare", "--template=", str(temp)],
                env=self._env,
                capture_output=True,
                check=True,
                timeout=GIT_TIMEOUT_S,
            )
            config = [
                ("core.autocrlf", "false"),
                ("core.fsmonitor", "false"),
                ("core.untrackedCache", "true"),
                ("core.symlinks", "true"),
                ("core.ignoreCase", "false"),
                ("core.precomposeUnicode", "false"),
                ("core.quotePath", "false"),
                # The index is a cache of the work tree (a damaged one is dropped and
                # built again, see take_while_locked), and agentd's log, which names the
                # snapshots, is not synced either: an fsync of a 10,000-entry index cost
                # up to 35 ms a snapshot here.
                ("core.fsync", "none"),
                # Snapshots are reachable from no ref: git must never prune them.
                ("gc.auto", "0"),
                ("gc.pruneExpire", "never"),
                ("index.version", "4"),
            ]
            for key, value in config:
                subprocess.run(
                    [self._git, f"--git-dir={temp}", "config", key, value],
                    env=self._env,
                    capture_output=True,
                    check=True,
                    timeout=GIT_TIMEOUT_S,
                )
            info = temp / "info"
            info.mkdir(exist_ok=True, mode=0o700)
            # Bytes as they are: no filter, no line-ending conversion, whatever the
            # workspace's .gitattributes say (this file outranks them).
            (info / "attributes").write_text("* -text -filter -ident -working-tree-encoding\n")
            lines = []
            for path in self._private:
                if path != self.workspace and path.is_relative_to(self.workspace):
                    lines.append(_exclude_line(path.relative_to(self.workspace).as_posix()))
            (info / "exclude").write_text("".join(f"{line}\n" for line in lines))
        except (subprocess.SubprocessError, OSError) as exc:
            shutil.rmtree(temp, ignore_errors=True)
            raise SnapshotError("git-failed", f"cannot create the snapshot store: {exc}") from None
        try:
            os.rename(temp, self.dir)
        except OSError:
            shutil.rmtree(temp, ignore_errors=True)
            if not (self.dir / "HEAD").exists():
                raise

    @property
    def has_index(self) -> bool:
        return (self.dir / "index").exists()

    # --- taking a snapshot ---------------------------------------------------------------

    def take(self) -> str:
        """Snapshot the workspace as it is now; returns the tree's id."""
        self.check()
        with self.locked():
            return self.take_while_locked()

    def take_while_locked(self) -> str:
        """`take`, for a caller holding `locked()`."""
        try:
            return self._take()
        except SnapshotError as exc:
            if exc.reason != "git-failed" or "index" not in exc.message:
                raise
        # A damaged index (a crash while git wrote it): built again from the work tree.
        logger.warning("snapshot store %s: index damaged, building it again", self.dir)
        (self.dir / "index").unlink(missing_ok=True)
        return self._take()

    def _take(self) -> str:
        cache = self.dir / _TREE_CACHE
        changed = self._changed_paths()
        if not changed:
            try:
                return cache.read_text().strip()
            except FileNotFoundError:
                pass
        self._check_size(changed)
        # Stale from here until the new tree is written (a crash in between must not
        # leave a cache naming a tree the index no longer is).
        cache.unlink(missing_ok=True)
        self._take_in(changed)
        tree = self._run("write-tree").decode().strip()
        cache.write_text(tree + "\n")
        return tree

    def take_after_restore(self, paths: list[str]) -> str:
        """The snapshot after a restore, for a caller holding `locked()`: the snapshot
        taken just before it plus the restored `paths`, without looking at the rest of
        the workspace again (what else changed meanwhile is the next snapshot's)."""
        if not paths:
            return self.take_while_locked()
        cache = self.dir / _TREE_CACHE
        cache.unlink(missing_ok=True)
        self._take_in(dict.fromkeys(paths, True))
        tree = self._run("write-tree").decode().strip()
        cache.write_text(tree + "\n")
        return tree

    def _take_in(self, paths: dict[str, bool]) -> None:
        """Bring the index's entries for `paths` up to date with the workspace.

        git names the paths (`ls-files`, which applies the ignore rules and the index's
        stat cache) but never reads them: a name it gives may have been seen through a
        directory that another process swapped for a symbolic link a moment before, so
        every path is opened here from the workspace root one component at a time with
        O_NOFOLLOW, and its bytes are read from that descriptor into the object store.
        A path that cannot be reached that way (through a link, gone, a directory now)
        leaves the snapshot; a file with other hard links is left out, as the tools
        leave it (its bytes may be a file outside the workspace); one agentd cannot read
        keeps its last entry."""
        entries: list[bytes] = []
        root = os.open(self.workspace, _DIR_FLAGS)
        try:
            objects = _ObjectWriter(self.dir / "objects")
            for path, indexed in paths.items():
                try:
                    found = _open_entry(root, path)
                except _Unreadable:
                    continue
                sha: str | None
                if found is None:  # gone, or reached only through a link: out
                    if indexed:
                        entries.append(b"0 " + NULL_SHA.encode() + b"\t" + os.fsencode(path))
                    continue
                if found.mode == SYMLINK:  # a symbolic link: its target is its content
                    sha = objects.write(found.target)
                else:
                    try:
                        sha = objects.blob(found.fd, found.size)
                    finally:
                        os.close(found.fd)
                if sha is not None:  # else it changed while being read: the next one's
                    entries.append(f"{found.mode} {sha}\t".encode() + os.fsencode(path))
        finally:
            os.close(root)
        if entries:
            self._run(
                *("update-index", "-z", "--add", "--remove", "--replace", "--index-info"),
                stdin=b"".join(e + b"\0" for e in entries),
            )
            # The entries just written have no stat data: git compares each file with its
            # blob once (reading it, never storing it) and records its stat when they
            # match; else the next `ls-files --modified` would read them all again.
            self._run("update-index", "-q", "--refresh", tolerate=1)

    def _changed_paths(self) -> dict[str, bool]:
        """What to take in: files new, changed or gone since the index was last written,
        nested repositories left out, each with whether the index has it. Stops reading
        at the file limit."""
        assert self._git is not None
        args = ("ls-files", "-z", "-t", "--modified", "--others", "--deleted", "--exclude-standard")
        # stderr to a file: a pipe read only after stdout could fill and stall git.
        errors = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            [self._git, f"--git-dir={self.dir}", f"--work-tree={self.workspace}", *args],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=self._env,
            cwd=self.workspace,
        )
        assert proc.stdout is not None
        paths: dict[str, bool] = {}
        rest = b""
        too_many = False
        try:
            while chunk := proc.stdout.read(1 << 16):
                *names, rest = (rest + chunk).split(b"\0")
                for entry in names:
                    # "<tag> <path>": "? " for a path the index does not have.
                    tag, name = entry[:2], entry[2:]
                    # "sub/": a nested repository, git's to skip, not ours to add.
                    if name and not name.endswith(b"/"):
                        paths[os.fsdecode(name)] = tag != b"? "
                if len(paths) > self.limits.max_files:
                    too_many = True
                    break
        finally:
            if too_many:
                proc.kill()
            proc.stdout.close()
            code = proc.wait()
            errors.seek(0)
            why = errors.read()[-4096:].decode("utf-8", "replace").strip().splitlines()
            errors.close()
        if too_many:
            raise SnapshotError(
                "too-large",
                f"the workspace {self.workspace} has more than {self.limits.max_files} files "
                "new or changed since the last snapshot ([snapshots] max_files)",
            )
        if code != 0:
            raise SnapshotError(
                "git-failed", f"git ls-files failed: {why[-1] if why else f'status {code}'}"
            )
        return paths

    def _check_size(self, paths: Iterable[str]) -> None:
        # Sizes only (a path seen through a swapped link adds a number, never bytes).
        total = 0
        for path in paths:
            try:
                st = os.lstat(self.workspace / path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
        if total > self.limits.max_bytes:
            raise SnapshotError(
                "too-large",
                f"the workspace {self.workspace} has {total} bytes of files new or changed "
                f"since the last snapshot, more than {self.limits.max_bytes} "
                "([snapshots] max_bytes)",
            )

    # --- comparing snapshots -------------------------------------------------------------

    def diff(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Change]]:
        """The paths that differ between each pair of trees (one git process for all)."""
        wanted = list(dict.fromkeys(pairs))
        out: dict[tuple[str, str], dict[str, Change]] = {pair: {} for pair in wanted}
        asked = [pair for pair in wanted if pair[0] != pair[1]]
        if not asked:
            return out
        lines = "".join(f"{a} {b}\n" for a, b in asked).encode()
        raw = self._run("diff-tree", "--stdin", "-r", "-z", "--raw", "--no-renames", stdin=lines)
        # With --stdin each compared pair starts with "a b\n" (a pair with no difference
        # prints nothing); each entry is ":<modes> <shas> <status>\0<path>\0". A path is
        # always read as the field after its entry, so no file name can pass for a header.
        fields = raw.split(b"\0")
        current: dict[str, Change] | None = None
        i = 0
        while i < len(fields):
            field = fields[i]
            i += 1
            if not field:
                continue
            if not field.startswith(b":"):
                header, _, field = field.partition(b"\n")
                a, _, b = header.decode().partition(" ")
                current = out.setdefault((a, b), {})
                if not field:
                    continue
            if i >= len(fields) or current is None:
                break
            old_mode, new_mode, old_sha, new_sha, _status = field[1:].decode().split(" ")
            path = os.fsdecode(fields[i])
            i += 1
            current[path] = Change(path, old_mode, old_sha, new_mode, new_sha)
        return out

    def directories(self, tree: str) -> set[str]:
        """Every directory that holds something in `tree`."""
        raw = self._run("ls-tree", "-r", "-d", "-z", "--name-only", tree)
        return {os.fsdecode(name) for name in raw.split(b"\0") if name}

    def exists(self, tree: str) -> bool:
        try:
            self._run("cat-file", "-e", f"{tree}^{{tree}}")
        except SnapshotError:
            return False
        return True

    # --- restoring -----------------------------------------------------------------------

    def restore(self, actions: list[Restore], keep_dirs: set[str]) -> RestoreOutcome:
        """Bring each path to its blob (or remove it). Removals go first, deepest first,
        then directories they emptied (unless `keep_dirs`, the target's directories,
        holds them), then writes. A path whose way is blocked is left as it is and
        reported; nothing outside the workspace is ever touched."""
        outcome = RestoreOutcome()
        root = os.open(self.workspace, _DIR_FLAGS)
        try:
            removals = sorted(
                (a for a in actions if a.deletes), key=lambda a: a.path.count("/"), reverse=True
            )
            emptied: set[str] = set()
            for action in removals:
                problem = _remove(root, action.path)
                if problem is None:
                    outcome.done.append(action)
                    parent = os.path.dirname(action.path)
                    while parent:
                        emptied.add(parent)
                        parent = os.path.dirname(parent)
                else:
                    outcome.failed.append((action.path, problem))
            for directory in sorted(emptied, key=lambda d: d.count("/"), reverse=True):
                if directory not in keep_dirs:
                    _remove_empty_dir(root, directory)
            writes = [a for a in actions if not a.deletes and a.mode != GITLINK]
            if writes:
                with self._blobs() as read_blob:
                    for action in writes:
                        try:
                            content = read_blob(action.sha)
                        except SnapshotError as exc:
                            outcome.failed.append((action.path, exc.message))
                            continue
                        problem = _write(root, action, content)
                        if problem is None:
                            outcome.done.append(action)
                        else:
                            outcome.failed.append((action.path, problem))
        finally:
            os.close(root)
        return outcome

    @contextlib.contextmanager
    def _blobs(self) -> Iterator[_BlobReader]:
        """Blob contents by id, from one `git cat-file --batch` process."""
        assert self._git is not None
        proc = subprocess.Popen(
            [self._git, f"--git-dir={self.dir}", "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self._env,
        )
        try:
            yield _BlobReader(proc)
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.stdout is not None:
                proc.stdout.close()
            try:
                proc.wait(GIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class StepSnapshots:
    """The snapshots around one run's steps that may change files, as log records:
    `{"k": "snapshot", "step", "m", "ws", "before" | "error"}` before the step's tools
    run, `{"k": "snapshot", "step", "after"}` once they have ended (aborted too).
    `record` returns once the record is written: a tool never runs before the snapshot
    it would be undone from is on record."""

    def __init__(
        self, store: WorkspaceStore, record: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
        self.store = store
        self._record = record
        self._taken: set[str] = set()

    async def warm(self) -> None:
        """The first snapshot of a workspace takes all of it in (seconds for a big one):
        taken while the model thinks, so a step waits for it less."""
        await asyncio.to_thread(self._warm)

    def _warm(self) -> None:
        if not self.store.has_index:
            with contextlib.suppress(SnapshotError):
                self.store.take()

    async def before(self, step_id: str, message_id: str) -> None:
        rec: dict[str, Any] = {
            "k": "snapshot",
            "step": step_id,
            "m": message_id,
            "ws": str(self.store.workspace),
        }
        try:
            rec["before"] = await asyncio.to_thread(self.store.take)
            self._taken.add(step_id)
        except SnapshotError as exc:
            logger.warning("no snapshot before step %s: %s", step_id, exc.message)
            rec["error"] = {"reason": exc.reason, "message": exc.message}
        rec["at"] = ids.now_ms()
        await self._record(rec)

    async def after(self, step_id: str) -> None:
        if step_id not in self._taken:
            return
        rec: dict[str, Any] = {"k": "snapshot", "step": step_id}
        try:
            rec["after"] = await asyncio.to_thread(self.store.take)
        except SnapshotError as exc:
            # The revert then counts the step as lasting until the next snapshot.
            logger.warning("no snapshot after step %s: %s", step_id, exc.message)
            rec["after"] = None
        rec["at"] = ids.now_ms()
        await self._record(rec)


class _BlobReader:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc

    def __call__(self, sha: str) -> bytes:
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        # One object at a time: the request is written before its answer is read, so
        # neither pipe can fill up while the other side waits.
        stdin.write(sha.encode() + b"\n")
        stdin.flush()
        header = stdout.readline().split()
        if len(header) != 3:
            raise SnapshotError("missing", f"object {sha} is missing from the snapshot store")
        size = int(header[2])
        data = stdout.read(size)
        stdout.read(1)  # the newline after the content
        if len(data) != size:
            raise SnapshotError("missing", f"object {sha} could not be read")
        return data


# --- file operations that never follow a symbolic link -------------------------------------

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


class _Unreadable(Exception):
    pass


@attrs.frozen
class _Entry:
    """A path to take in: a regular file (`fd` open on it, `size` bytes) or a symbolic
    link (`target`)."""

    mode: str
    fd: int = -1
    size: int = 0
    target: bytes = b""


def _open_entry(root: int, path: str) -> _Entry | None:
    """What `path` is, reached from `root` without following a link; None when there is
    nothing to take in there (gone, a directory, a link on the way, another kind of file,
    a file with other hard links). Raises _Unreadable when it cannot be read."""
    try:
        parent, name = _open_parent(root, path, create=False)
    except _Blocked:
        return None
    except OSError:
        raise _Unreadable from None
    try:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            try:
                return _Entry(SYMLINK, target=os.fsencode(os.readlink(name, dir_fd=parent)))
            except OSError:
                return None  # replaced since the stat
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a link since the stat
                return None
            raise _Unreadable from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            os.close(fd)
            return None
        return _Entry(EXECUTABLE if st.st_mode & stat.S_IXUSR else REGULAR, fd, st.st_size)
    finally:
        os.close(parent)


class _ObjectWriter:
    """Writes git objects (zlib-compressed `blob <size>\\0<bytes>`, named by their SHA-1)
    into a store's `objects` directory: what `git hash-object -w` does, from a descriptor
    agentd opened rather than a path git would open again."""

    def __init__(self, objects: Path) -> None:
        self.objects = objects

    def write(self, content: bytes) -> str:
        """Store `content` (a small one: a link's target, a small file) as a blob; its id."""
        header = b"blob %d\0" % len(content)
        sha = hashlib.sha1(header + content, usedforsecurity=False).hexdigest()
        if os.path.exists(self.objects / sha[:2] / sha[2:]):
            return sha
        temp, out = self._temp(sha[:2])
        try:
            try:
                file_modes.write_all(out, zlib.compress(header + content, 1))
            finally:
                os.close(out)
            self._keep(temp, sha)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        return sha

    def blob(self, fd: int, size: int) -> str | None:
        """Store the `size` bytes `fd` holds as a blob; its id, or None when `fd` holds
        more or fewer (it was being written to). Streamed: a big file is never in memory."""
        if size <= _CHUNK:
            data = os.read(fd, size + 1)  # one more: a file that grew is not taken
            return self.write(data) if len(data) == size else None
        header = b"blob %d\0" % size
        digest = hashlib.sha1(header, usedforsecurity=False)
        packer = zlib.compressobj(1)
        temp, out = self._temp("")
        try:
            try:
                file_modes.write_all(out, packer.compress(header))
                left = size
                while left:
                    data = os.read(fd, min(left, _CHUNK))
                    if not data:
                        return None
                    left -= len(data)
                    digest.update(data)
                    file_modes.write_all(out, packer.compress(data))
                if os.read(fd, 1):
                    return None
                file_modes.write_all(out, packer.flush())
            finally:
                os.close(out)
            sha = digest.hexdigest()
            self._keep(temp, sha)
            return sha
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def _temp(self, folder: str) -> tuple[Path, int]:
        """A new file to write an object into, in `folder` (the one it will be renamed
        into, when known). Mode 0600, not git's 0444: creating read-only files cost ten
        times as much here."""
        where = self.objects / folder
        where.mkdir(mode=0o700, exist_ok=True)
        temp = where / f"tmp_obj_{secrets.token_hex(8)}"
        return temp, os.open(temp, _NEW_FILE_FLAGS, 0o600)

    def _keep(self, temp: Path, sha: str) -> None:
        """The object at its name (a copy already there is the same bytes: kept)."""
        folder = self.objects / sha[:2]
        if os.path.exists(folder / sha[2:]):
            os.unlink(temp)
            return
        folder.mkdir(mode=0o700, exist_ok=True)
        os.rename(temp, folder / sha[2:])


class _Blocked(Exception):
    pass


def _open_parent(root: int, path: str, *, create: bool) -> tuple[int, str]:
    """The directory holding `path` (a descriptor, opened component by component with
    O_NOFOLLOW from `root`) and the last name. Missing directories are created when
    `create`, with the user's usual mode; a component that is a symbolic link or not a
    directory raises _Blocked."""
    *dirs, name = path.split("/")
    fd = os.dup(root)
    walked = []
    try:
        for part in dirs:
            walked.append(part)
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise _Blocked(f"{'/'.join(walked)} does not exist") from None
                os.mkdir(part, 0o700, dir_fd=fd)
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                # 0777 minus the user's umask, as they would make it (agentd's is 077).
                os.fchmod(nxt, file_modes.user_dir_mode())
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _Blocked(
                        f"{'/'.join(walked)} is a symbolic link or not a directory"
                    ) from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd, name


def _remove(root: int, path: str) -> str | None:
    """Remove the file (or link) `path`; None when done or already gone, else why not."""
    try:
        fd, name = _open_parent(root, path, create=False)
    except _Blocked:
        return None  # its directory is gone (or is no directory): so is the file
    except OSError as exc:
        return f"cannot remove it: {exc.strerror}"
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        return "a directory is in its place"
    except OSError as exc:
        if exc.errno == errno.EISDIR or exc.errno == errno.EPERM:
            return "a directory is in its place"
        return f"cannot remove it: {exc.strerror}"
    finally:
        os.close(fd)
    return None


def _remove_empty_dir(root: int, path: str) -> None:
    try:
        fd, name = _open_parent(root, path, create=False)
    except (_Blocked, OSError):
        return
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(name, dir_fd=fd)
    except OSError:
        pass  # not empty (the user's files), or gone
    finally:
        os.close(fd)


def _write(root: int, action: Restore, content: bytes) -> str | None:
    """Replace `action.path` with `content` (a file, or a symbolic link's target) by a
    rename in its directory; None when done, else why not."""
    try:
        fd, name = _open_parent(root, action.path, create=True)
    except _Blocked as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot create its directory: {exc.strerror}"
    temp = f".{name[:200]}.{secrets.token_hex(4)}.agentd-revert"
    try:
        try:
            current: os.stat_result | None = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if current is not None and stat.S_ISDIR(current.st_mode):
            return "a directory is in its place"
        if action.mode == SYMLINK:
            os.symlink(os.fsdecode(content), temp, dir_fd=fd)
        else:
            executable = action.mode == EXECUTABLE
            if current is not None and stat.S_ISREG(current.st_mode):
                mode = stat.S_IMODE(current.st_mode) & ~0o111
                if executable:
                    mode |= (mode & 0o444) >> 2
            else:
                full = 0o777 if executable else 0o666
                mode = full & ~file_modes.user_umask()
            out = os.open(temp, _NEW_FILE_FLAGS, 0o600, dir_fd=fd)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(out, view) :]
                os.fchmod(out, mode)
            finally:
                os.close(out)
        os.rename(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=fd)
        return f"cannot write it: {exc.strerror}"
    finally:
        os.close(fd)
    return None
