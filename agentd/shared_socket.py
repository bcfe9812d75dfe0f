"""Where the user's shared daemon listens, and the checks both ends make before trusting
the other. Standard library only: the forwarder (`agentd.forwarder`) imports this before
anything else of agentd.

One daemon per *identity*: agentd's version, the command line options that change what
it does, the configuration file (its path and its bytes), and every environment
variable agentd reads (its own, the model client's, the directories it derives paths
from, PATH for the commands its tools run, and any variable the configuration file
names). Two editors whose identities differ never share a daemon; an upgraded agentd
never attaches to an old one.

The socket lives in a private directory: `$AGENTD_RUNTIME_DIR`, else
`$XDG_RUNTIME_DIR/agentd`, else `/tmp/agentd-<uid>`. The directory must be the user's,
not a link, and reachable by nobody else (mode 0700); the socket must be the user's
too, and the process at the other end must run as the user (SO_PEERCRED). Anything
else is refused, never used: agentd then runs unshared and says why on stderr.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import sys
from collections.abc import Callable, Mapping, Sequence

from agentd import __version__

try:  # hashlib's OpenSSL costs a forwarder 4 MiB of memory; BLAKE2 is built in
    from _blake2 import blake2b
except ImportError:  # pragma: no cover (an interpreter without it)
    from hashlib import blake2b

# Variables read by agentd, by Python, or by the libraries it hands its environment to.
ENV_PREFIXES = ("AGENTD_", "OPENAI_", "AZURE_OPENAI_", "PYTHON", "SSL")
ENV_NAMES = (
    "VIRTUAL_ENV",
    "CURL_CA_BUNDLE",
    "HOME",
    "PATH",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)
# Variables that say where the socket is, not what the daemon does.
ENV_PLACE = ("AGENTD_RUNTIME_DIR", "AGENTD_SHARED")
# Variables a configuration file names: `${NAME}` in a value, `api_key_env = "NAME"`.
_CONFIG_ENV = re.compile(rb'\$\{([A-Za-z_][A-Za-z0-9_]*)\}|api_key_env\s*=\s*"([^"]+)"')
# The forwarder and the daemon talk in messages (SOCK_SEQPACKET: each is whole or not
# sent): the forwarder's hello with the editor's descriptors (its pid, working directory,
# environment and umask), the daemon's `{"ready": true}` (and the forwarder's GO) or
# `{"refused": why}`, then `{"log": line}` (what it logs, for the editor's stderr) and
# `{"exit": code}`. A hello holds an environment: typically a few KiB; one over
# HELLO_MAX is not shared.
HELLO_MAX = 1024 * 1024
# The forwarder's answer to the daemon's `{"ready": true}`: from then on the editor's pipes
# are the daemon's (see agentd.forwarder).
GO = b'{"go": true}'
MESSAGE_MAX = 16 * 1024


# agentd's variables that name a path: a relative one is the editor's working directory's,
# made absolute before the identity is taken and the daemon started (its own working
# directory is elsewhere).
ENV_PATHS = ("AGENTD_DATA_DIR", "AGENTD_STATE_DIR", "AGENTD_CONFIG", "AGENTD_TOOL_CONTEXT_DIR")


def absolute_paths(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with agentd's path variables made absolute (against the working directory)."""
    return {
        name: os.path.abspath(os.path.expanduser(value))
        if name in ENV_PATHS and value and not os.path.isabs(os.path.expanduser(value))
        else value
        for name, value in env.items()
    }


def config_path(option: str | None, env: Mapping[str, str]) -> str:
    """The configuration file agentd will read (`agentd.config.default_config_path`)."""
    if option:
        return os.path.abspath(os.path.expanduser(option))
    if env.get("AGENTD_CONFIG"):
        return os.path.abspath(os.path.expanduser(env["AGENTD_CONFIG"]))
    home = env.get("HOME") or os.path.expanduser("~")
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Application Support", "agentd", "config.toml")
    base = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return os.path.join(base, "agentd", "config.toml")


def read_config(path: str) -> bytes:
    """The configuration file's bytes (at most 1 MiB: a path to /dev/zero must not hang
    the editor); b"" when there is none."""
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError:
        return b""


def identity(
    options: Sequence[str], config_file: str, config_bytes: bytes, env: Mapping[str, str]
) -> str:
    """The daemon's identity as a short hex digest (see the module's docstring)."""
    named = {m.group(1) or m.group(2) for m in _CONFIG_ENV.finditer(config_bytes)}
    read = {
        name: value
        for name, value in env.items()
        if (name.startswith(ENV_PREFIXES) or name in ENV_NAMES or name.encode() in named)
        and name not in ENV_PLACE
    }
    material = json.dumps(
        {
            "version": __version__,
            "python": sys.executable,
            "agentd": os.path.dirname(os.path.abspath(__file__)),
            "options": list(options),
            "config": config_file,
            "configDigest": blake2b(config_bytes).hexdigest(),
            "env": sorted(read.items()),
        },
        sort_keys=True,
    )
    return blake2b(material.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()


def runtime_dir(env: Mapping[str, str]) -> str:
    if env.get("AGENTD_RUNTIME_DIR"):
        return os.path.abspath(env["AGENTD_RUNTIME_DIR"])
    if env.get("XDG_RUNTIME_DIR"):
        return os.path.join(env["XDG_RUNTIME_DIR"], "agentd")
    return os.path.join("/tmp", f"agentd-{os.getuid()}")


def private_dir_problem(path: str) -> str | None:
    """Create the directory (0700) if missing; why it cannot be trusted, or None."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"cannot create {path}: {exc.strerror or exc}"
    problem = _not_ours(path, stat.S_ISDIR, "a directory (a link or a file)")
    if problem is not None:
        return problem
    mode = stat.S_IMODE(os.lstat(path).st_mode)  # (its owner is the user: only they change it)
    if mode & 0o077:
        return f"{path} has mode {mode:o}, others can reach it: refused"
    return None


def socket_file_problem(path: str) -> str | None:
    """Why an existing socket file cannot be trusted (None: it can, or it is missing)."""
    if not os.path.lexists(path):
        return None
    return _not_ours(path, stat.S_ISSOCK, "a socket")


def open_private_file(path: str, flags: int) -> int:
    """Open (creating it 0600) a file of the runtime dir: a regular file of this user's,
    never followed through a link, never waited on (a FIFO put there would block the
    open). Raises OSError saying why it cannot be used."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        os.close(fd)
        raise OSError(f"{path} is not a regular file of this user's")
    os.set_blocking(fd, True)
    return fd


def _not_ours(path: str, is_kind: Callable[[int], bool], kind: str) -> str | None:
    """Why `path` (not followed) is not this user's `kind`, or None."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if not is_kind(st.st_mode):
        return f"{path} is not {kind}: refused"
    if st.st_uid != os.getuid():
        return f"{path} belongs to uid {st.st_uid}, not to this user: refused"
    return None


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket."""
    if hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        return int.from_bytes(creds[4:8], sys.byteorder)
    getpeereid = getattr(os, "getpeereid", None)  # (not in CPython: BSDs run unshared)
    if getpeereid is None:
        raise OSError("this platform cannot tell who is at the other end of a socket")
    return int(getpeereid(sock.fileno())[0])


def supported() -> bool:
    """Whether this platform can run shared: Unix message sockets that pass
    descriptors, and a way to check the peer's uid."""
    return all(hasattr(socket, name) for name in ("AF_UNIX", "SOCK_SEQPACKET", "SO_PEERCRED"))


def new_socket() -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
