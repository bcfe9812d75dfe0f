"""File modes: what agentd keeps for itself is private, whatever the umask; what the
model's tools make in the user's workspace is the user's, made with the user's umask.

Private: the data dir and everything below it (session logs, locks, spilled tool
output, the catalog and SQLite's `-wal` and `-shm`), the state dir and the tool-context
files, the log file: directories 0700, files 0600. Code that creates them asks for
those modes explicitly, and `main` also sets the process umask to 077 first thing
(`make_private`), for whatever else gets created on agentd's behalf (SQLite, libraries).

The user's: `write_file` creates files 0666 and directories 0777 minus the umask agentd
was started with (`user_umask`), as an editor would; bash commands, stdio MCP servers
and the daemon `agentd chat` spawns run with that umask again.

Existing directories and files agentd owns that are too open (made by an older agentd,
or under a looser umask) are tightened at startup (`tighten`), except what is not owned
by this user or is a symbolic link: those are left alone and reported.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600

_user_umask: int | None = None


def make_private() -> None:
    """Remember the umask agentd was started with, then use 077 for everything agentd
    creates itself. Called first thing by `main`; calling it again changes nothing."""
    global _user_umask
    previous = os.umask(PRIVATE_UMASK)
    if _user_umask is None:
        _user_umask = previous


def user_umask() -> int:
    """The umask of the user who started agentd (the current one when `make_private`
    was never called, as when agentd's modules are used as a library)."""
    if _user_umask is not None:
        return _user_umask
    return current_umask()


def current_umask() -> int:
    # /proc avoids setting the umask to read it (another thread could create a file
    # in between); where there is no /proc, read it by setting it back.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    value = os.umask(PRIVATE_UMASK)
    os.umask(value)
    return value


def user_dir_mode() -> int:
    return 0o777 & ~user_umask()


def make_private_dir(path: Path) -> None:
    """Create `path` (and missing parents) as private directories; an existing one is
    left as it is (see `tighten`)."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)


def tighten(path: Path | str, *, dir_fd: int | None = None, shown: str | None = None) -> str | None:
    """Take group and other permissions off an existing directory (0700) or regular file
    (0600) agentd owns. Returns why it was left alone, for the log: not owned by this
    user, or a symbolic link (where it leads is not agentd's to change). A missing path
    or one already private: None. With `dir_fd`, `path` is relative to it (`shown` names
    it in the messages)."""
    shown = shown or str(path)
    try:
        before = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(before.st_mode):
        return f"{shown} is a symbolic link: its permissions are left as they are"
    if not (stat.S_ISDIR(before.st_mode) or stat.S_ISREG(before.st_mode)):
        return None
    if not before.st_mode & 0o077:
        return None
    if before.st_uid != os.geteuid():
        mode = stat.filemode(before.st_mode)
        return (
            f"{shown} is {mode} and owned by uid {before.st_uid}, not this user: "
            "its permissions are left as they are"
        )
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        after = os.fstat(fd)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            return f"{shown} changed while its permissions were checked: left as it is"
        os.fchmod(fd, stat.S_IMODE(after.st_mode) & ~0o077)
    finally:
        os.close(fd)
    return None


def tighten_tree(
    root: Path, is_agentds: Callable[[str], bool], *, checked_elsewhere: tuple[str, ...] = ()
) -> list[str]:
    """`tighten` the entries right below the directory `root` that are agentd's
    (`is_agentds(name)`; those in `checked_elsewhere` are agentd's but have a policy of
    their own), reached through `root` itself, and `root` too when it holds nothing
    else: a directory shared with other files (a home directory given as the data dir)
    or with other users (sticky, like /tmp) keeps its mode, agentd's entries in it are
    private all the same. When `root` is a symbolic link nothing is touched. Returns
    why anything agentd's was left alone."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError:
        if os.path.islink(root):
            return [f"{root} is a symbolic link: its permissions are left as they are"]
        raise
    problems: list[str] = []
    try:
        names = os.listdir(fd)
        for name in names:
            if is_agentds(name) and name not in checked_elsewhere:
                problem = tighten(name, dir_fd=fd, shown=str(root / name))
                if problem:
                    problems.append(problem)
        own = os.fstat(fd)
        if own.st_mode & stat.S_ISVTX or not all(is_agentds(n) for n in names):
            if own.st_mode & 0o077:
                logger.info(
                    "%s holds more than agentd's files: its permissions are left as they are", root
                )
        else:
            problem = _tighten_open_dir(fd, own, str(root))
            if problem:
                problems.append(problem)
    finally:
        os.close(fd)
    return problems


def _tighten_open_dir(fd: int, st: os.stat_result, shown: str) -> str | None:
    if not st.st_mode & 0o077:
        return None
    if st.st_uid != os.geteuid():
        return (
            f"{shown} is {stat.filemode(st.st_mode)} and owned by uid {st.st_uid}, not this "
            "user: its permissions are left as they are"
        )
    os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o077)
    return None


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd` (os.write may take fewer than given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
