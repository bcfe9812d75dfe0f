"""Confinement of tool paths to the workspace root.

Every path a model or an editor names is resolved with symbolic links
(`os.path.realpath`) and must land inside the *real* workspace root. The resolved path is
then opened one component at a time from a descriptor of the root, each relative to the
directory opened before it (`dir_fd=`) with O_NOFOLLOW: the resolved path has no symbolic
link in it, so a component that is one now was swapped in since, and the open fails. What
is read or listed is therefore always what lies below the root, whatever another process
does to the paths meanwhile; the check is made on what was opened, not on a path checked
before. Where the OS can say which path an fd refers to, that is checked too.

Only regular files are read or written: opening a FIFO blocks, and devices such as
/dev/zero never end (the type is checked with fstatat before the open, so a device is
never opened). A regular file with more than one hard link is refused as well, since one
of its other names may be outside the workspace and nothing here can tell.

All functions here block; callers run them in a worker thread.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import sys
from pathlib import Path

from agentd import file_modes
from agentd.tools.spec import ToolError

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def is_within(path: str, root: str) -> bool:
    """True when `path` is `root` or below it (both already normalised)."""
    if path == root:
        return True
    prefix = root if root.endswith(os.sep) else root + os.sep
    return path.startswith(prefix)


def fd_path(fd: int) -> str | None:
    """The path an open fd refers to, when the OS can tell (Linux, macOS); else None."""
    if sys.platform.startswith("linux"):
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
    if sys.platform == "darwin":
        import fcntl

        try:
            raw = fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024))  # type: ignore[attr-defined]
        except OSError:
            return None
        return os.fsdecode(raw.rstrip(b"\0"))
    return None


class Workspace:
    """The real workspace root and the checks every tool path goes through."""

    def __init__(self, root: Path | str, umask: int | None = None) -> None:
        self.given_root = os.path.abspath(os.fspath(root))
        self.root = os.path.realpath(self.given_root)
        # What a file or directory the tools make takes off 0666 / 0777: the user's
        # umask (agentd's own is 077), the editor's own when a shared daemon serves it.
        self.umask = file_modes.user_umask() if umask is None else umask

    def check_root(self) -> None:
        if not os.path.isdir(self.root):
            raise ToolError(
                f"The workspace root {self.given_root} does not exist or is not a directory."
            )

    def resolve(self, path: str, *, param: str = "path") -> str:
        """The real absolute path for a model-supplied path; ToolError if it leaves the workspace."""
        if "\0" in path:
            raise ToolError(f'Parameter "{param}" contains a NUL byte; that is never a valid path.')
        if path == "":
            raise ToolError(f'Parameter "{param}" must not be empty.')
        joined = path if os.path.isabs(path) else os.path.join(self.given_root, path)
        try:
            real = os.path.realpath(joined)
        except OSError:
            # realpath reads a link it has just seen: one replaced in between (by a
            # directory, EINVAL; removed, ENOENT) fails the read.
            raise ToolError(
                f"{path} changed while it was being resolved (a symbolic link on its path "
                "was replaced); try again."
            ) from None
        if is_within(real, self.root):
            return real
        lexical = os.path.normpath(joined)
        if is_within(lexical, self.given_root) or is_within(lexical, self.root):
            raise ToolError(
                f"{path} resolves through a symbolic link to a location outside the workspace "
                f"({self.given_root}); only paths inside the workspace are allowed."
            )
        raise ToolError(
            f"{path} is outside the workspace ({self.given_root}); only paths inside the "
            "workspace are allowed."
        )

    def relative(self, real: str) -> str:
        """How a real path inside the workspace is shown to the model: relative, with '/'."""
        rel = os.path.relpath(real, self.root)
        return rel.replace(os.sep, "/") if os.sep != "/" else rel

    def fd_is_inside(self, fd: int) -> bool:
        where = fd_path(fd)
        return where is None or is_within(where, self.root)

    def open_root(self) -> int:
        """A descriptor of the real root directory (the caller closes it)."""
        try:
            return os.open(self.root, _DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            raise ToolError(
                f"The workspace root {self.given_root} does not exist or is not a directory."
            ) from None

    def _components(self, real: str) -> list[str]:
        if not is_within(real, self.root):
            raise ToolError(f"{real} is outside the workspace ({self.given_root}).")
        rel = os.path.relpath(real, self.root)
        return [] if rel == "." else rel.split(os.sep)

    def open_parent(self, real: str, display: str, *, create: bool = False) -> tuple[int, str]:
        """(fd of the directory holding `real`, its last component), walked from the root.

        `create` makes missing directories on the way (for writes). `real` must be a
        resolved path inside the root, and not the root itself.
        """
        parts = self._components(real)
        if not parts:
            raise ToolError(f"{display} is the workspace root itself.")
        fd = self.open_root()
        for name in parts[:-1]:
            # (It closes the fd it was given.)
            fd = _step_into(fd, name, display, create=create, dir_mode=0o777 & ~self.umask)
        return fd, parts[-1]

    def lstat(self, real: str, display: str) -> os.stat_result:
        """The status of `real` itself (a symlink is reported as one), walked from the root."""
        if real == self.root:
            fd = self.open_root()
            try:
                return os.fstat(fd)
            finally:
                os.close(fd)
        parent, name = self.open_parent(real, display)
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)

    def open_dir(self, real: str, display: str) -> int:
        """A descriptor of the directory `real`, walked from the root (caller closes it)."""
        if real == self.root:
            return self.open_root()
        parent, name = self.open_parent(real, display)
        fd = _step_into(parent, name, display, create=False, last=True)
        try:
            if not self.fd_is_inside(fd):
                raise ToolError(f"{display} changed while it was being opened; try again.")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_file(
        self, real: str, display: str, *, action: str = "read", check_fd_path: bool = True
    ) -> tuple[int, os.stat_result]:
        """Open a regular, singly linked file inside the workspace; returns (fd, fstat).

        `action` names what the caller will do with it, for the refusal messages.
        `check_fd_path` also asks the OS where the fd is (one more system call; the walk
        alone already confines the open).
        """
        if real == self.root:
            raise ToolError(f"{display} is a directory.")
        parent, name = self.open_parent(real, display)
        try:
            fd, st = open_regular_at(parent, name, display, action=action)
        finally:
            os.close(parent)
        try:
            if check_fd_path and not self.fd_is_inside(fd):
                raise ToolError(f"{display} changed while it was being opened; try again.")
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def write_atomically(
        self,
        real: str,
        data: bytes,
        display: str,
        *,
        expect: tuple[int, int] | None = None,
    ) -> bool:
        """Replace (or create) `real` with `data` via a temp file and rename; True if created.

        Missing parent directories are created, each walked into from the root as reads
        are. `expect` is the (st_dev, st_ino) the caller read; the write is refused if the
        file was replaced since.
        """
        dir_fd, name = self.open_parent(real, display, create=True)
        try:
            if not self.fd_is_inside(dir_fd):
                raise ToolError(f"{display} changed while it was being opened; try again.")
            try:
                current: os.stat_result | None = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            if current is not None:
                if stat.S_ISLNK(current.st_mode):
                    raise ToolError(
                        f"{display} changed into a symbolic link; refusing to write it."
                    )
                check_regular_single_link(current, display, action="write")
                if expect is not None and (current.st_dev, current.st_ino) != expect:
                    raise ToolError(f"{display} was replaced while it was being edited; try again.")
            elif expect is not None:
                raise ToolError(f"{display} was deleted while it was being edited.")
            # The temp file sits next to the target so the rename is atomic (same file system).
            temp = f".{name[:200]}.{secrets.token_hex(4)}.agentd-tmp"
            fd = os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=dir_fd)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    # A new file gets 0666 minus the user's umask, as any editor would
                    # make it (agentd's own umask is 077); a replaced one keeps its mode.
                    if current is not None:
                        os.fchmod(fd, stat.S_IMODE(current.st_mode))
                    else:
                        os.fchmod(fd, 0o666 & ~self.umask)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                try:
                    os.unlink(temp, dir_fd=dir_fd)
                except OSError:
                    pass
                raise
        finally:
            os.close(dir_fd)
        return current is None


def _step_into(
    parent: int, name: str, display: str, *, create: bool, last: bool = False, dir_mode: int = 0
) -> int:
    """Open directory `name` below `parent` without following a symlink; closes `parent`
    (also on failure) and returns the new descriptor. `create`: a missing one is made,
    with `dir_mode`."""
    made = False
    try:
        while True:
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    what = "Directory" if last else "File"
                    raise ToolError(f"{what} not found: {display}") from None
                try:
                    os.mkdir(name, 0o777, dir_fd=parent)
                    made = True
                except FileExistsError:
                    pass  # made meanwhile; open it on the next turn
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                try:
                    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                except OSError:
                    st = None
                if st is not None and stat.S_ISLNK(st.st_mode):
                    # The resolved path had no symlink here: one was swapped in since.
                    raise ToolError(
                        f"{display} changed while it was being opened (a directory on its "
                        "path became a symbolic link); try again."
                    ) from None
                if last:
                    raise ToolError(f"{display} is not a directory.") from None
                if create:
                    raise ToolError(
                        f"Cannot write {display}: a parent path exists and is not a directory."
                    ) from None
                raise ToolError(
                    f"File not found: {display} (a parent is not a directory)"
                ) from None
            else:
                if made:
                    # 0777 minus the user's umask, as they would make it (agentd's own
                    # umask, 077, took more off).
                    try:
                        os.fchmod(fd, dir_mode)
                    except BaseException:
                        os.close(fd)
                        raise
                return fd
    finally:
        os.close(parent)


def open_regular_at(
    dir_fd: int, name: str, display: str, *, action: str
) -> tuple[int, os.stat_result]:
    """Open the regular, singly linked file `name` in `dir_fd` without following a symlink
    and without opening anything else (the type is checked before the open, the identity
    after it); returns (fd, fstat)."""
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise ToolError(f"File not found: {display}") from None
    if stat.S_ISLNK(before.st_mode):
        raise ToolError(f"{display} changed into a symbolic link; refusing to {action} it.")
    check_regular_single_link(before, display, action=action)
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise ToolError(f"File not found: {display}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ToolError(
                f"{display} changed into a symbolic link; refusing to {action} it."
            ) from None
        raise
    try:
        after = os.fstat(fd)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise ToolError(f"{display} changed while it was being opened; try again.")
        check_regular_single_link(after, display, action=action)
    except BaseException:
        os.close(fd)
        raise
    return fd, after


def check_regular_single_link(st: os.stat_result, display: str, *, action: str) -> None:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        hint = " Use list_dir to see its entries." if action == "read" else ""
        raise ToolError(f"{display} is a directory.{hint}")
    if not stat.S_ISREG(mode):
        if stat.S_ISFIFO(mode):
            kind = "a FIFO"
        elif stat.S_ISSOCK(mode):
            kind = "a socket"
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = "a device file"
        else:
            kind = "a special file"
        raise ToolError(f"Refusing to {action} {display}: it is {kind}, not a regular file.")
    if st.st_nlink > 1:
        raise ToolError(
            f"Refusing to {action} {display}: it has {st.st_nlink} hard links, and another "
            "link may be outside the workspace."
        )
