"""Command line: `agentd` (serve stdio), and its subcommands.

Parses arguments, sets up logging (stderr or a file, never stdout: stdout carries the
protocol) and hands off. Imports are deferred to the subcommand that needs them, so
`agentd` reaches `initialize` without loading what serving does not use.
"""

from __future__ import annotations

import contextlib
import os
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING

from agentd import __version__

if TYPE_CHECKING:
    import argparse

# Everything else is imported by the command that needs it: the forwarder (`agentd`
# attached to the shared daemon) lives on the standard library's smallest part.


def setup_logging(verbose: int, log_file: str | None) -> None:
    """One handler (stderr, or the log file), formatting through the redacting
    formatter: registered secrets are masked in messages, exception text, tracebacks and
    stack info. Uncaught exceptions are routed through it too."""
    import logging

    from agentd import file_modes, redaction

    # Before the first record: the credentials in agentd's own environment.
    redaction.REGISTRY.register_environment(os.environ)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler: logging.Handler
    problem = None
    if log_file:
        # A log file left by an older agentd may be readable by others; a special file
        # (/dev/stderr, a FIFO) is used as it is.
        if os.path.isfile(log_file) and not os.path.islink(log_file):
            problem = file_modes.tighten(log_file)
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        redaction.RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if problem:
        logging.getLogger("agentd.file_modes").warning("log file: %s", problem)
    redaction.route_uncaught_exceptions()
    # pygls logs whole payloads at INFO: they may carry access tokens and user text.
    logging.getLogger("pygls").setLevel(logging.WARNING)
    # The MCP SDK logs whole messages at DEBUG, like pygls.
    for noisy in ("openai", "httpx", "httpx2", "httpcore", "httpcore2", "mcp"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def config_file_problem(path: str) -> str | None:
    """Why a configuration file named on the command line cannot be read (None: it can).
    A missing default file is no problem; a file the user named explicitly is."""
    try:
        with open(os.path.expanduser(path), "rb"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def log_file_problem(path: str) -> str | None:
    """Why the log file named on the command line cannot be written (None: it can)."""
    try:
        with open(path, "a", encoding="utf-8"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _add_common_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The options of every command that runs agentd. They are accepted before the
    subcommand and after it (`agentd chat --config f`, as users type it); after it, one
    not given must not reset the value given before it (hence SUPPRESS)."""

    import argparse

    def default(value: object) -> object:
        return argparse.SUPPRESS if after_command else value

    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="more logging (-v info, -vv debug); logs go to stderr",
    )
    for flag, metavar, help_text in (
        ("--log-file", "FILE", "write logs to this file instead of stderr"),
        (
            "--data-dir",
            "DIR",
            "where sessions are stored (default: $AGENTD_DATA_DIR or the user data directory)",
        ),
        (
            "--config",
            "FILE",
            "configuration file (default: $AGENTD_CONFIG or <user config dir>/agentd/config.toml)",
        ),
    ):
        parser.add_argument(flag, metavar=metavar, default=default(None), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="agentd",
        description="Session daemon for AI chat in editors. With no subcommand, serves "
        "JSON-RPC (LSP framing) on stdin/stdout for an editor.",
    )
    parser.add_argument("--version", action="version", version=f"agentd {__version__}")
    _add_common_options(parser, after_command=False)
    parser.add_argument(
        "--max-frame-bytes",
        type=_positive_int,
        help="largest accepted JSON-RPC frame (default 32 MiB)",
    )
    parser.add_argument(
        "--no-shared",
        action="store_true",
        help="serve this editor in this process instead of attaching to the user's shared "
        "daemon (also: [daemon] shared = false, or AGENTD_SHARED=0)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve JSON-RPC on stdio (the default)")
    _add_common_options(serve, after_command=True)
    serve.add_argument("--no-shared", action="store_true", default=argparse.SUPPRESS)
    daemon = sub.add_parser(
        "daemon",
        help="the user's shared daemon (started by `agentd` itself, not by hand)",
    )
    daemon.add_argument("--socket", required=True, metavar="PATH", help="where to listen")
    daemon.add_argument(
        "--ready-fd", type=int, metavar="FD", help="write 'ready' here once listening"
    )
    _add_common_options(daemon, after_command=True)
    acp = sub.add_parser(
        "acp",
        help="serve the Agent Client Protocol on stdio (Zed, JetBrains, CodeCompanion, "
        "agent-shell...)",
    )
    _add_common_options(acp, after_command=True)
    chat = sub.add_parser(
        "chat",
        help="chat in the terminal (spawns a daemon; works offline "
        "with the bundled scripted model when no model is configured)",
        description="Chat in the terminal. With PROMPT: send it, print the answer, exit. "
        "Without: an interactive chat (/help lists its commands). With no model configured "
        "(AGENTD_MODEL, or default_model in the configuration file), or with --offline, "
        "the bundled scripted model answers, offline.",
        epilog="Keys: Ctrl-C stops the answer being written (then exit code 130 with a "
        "PROMPT); at the prompt it clears the line, and a second Ctrl-C, or Ctrl-D, leaves. "
        "The answer goes to stdout; notices and errors to stderr.",
    )
    chat.add_argument(
        "prompt", nargs="*", metavar="PROMPT", help="send this and exit after the answer"
    )
    chat.add_argument("--session", metavar="ID", help="continue this session")
    chat.add_argument("--list", action="store_true", help="list recent sessions and exit")
    chat.add_argument("--model", help="model to use (default: the configured default_model)")
    chat.add_argument(
        "--offline",
        action="store_true",
        help="use the bundled scripted model even if a model is configured",
    )
    chat.add_argument(
        "--allow-tools",
        action="store_true",
        help="answer yes to every permission question (write_file, edit_file, bash, "
        "MCP tools not trusted in the configuration)",
    )
    _add_common_options(chat, after_command=True)
    reindex = sub.add_parser("reindex", help="rebuild the session catalog from the session logs")
    _add_common_options(reindex, after_command=True)
    export = sub.add_parser(
        "export",
        help="print a session: versioned JSON (for agentd import) or a Markdown transcript",
    )
    export.add_argument("session_id", metavar="SESSION_ID")
    export.add_argument("--format", choices=("json", "markdown"), default="json")
    _add_common_options(export, after_command=True)
    imp = sub.add_parser(
        "import",
        help="recreate a session from a JSON export (agentd export) as a new session; "
        "prints its id",
    )
    imp.add_argument("file", metavar="FILE", help="the export (- reads standard input)")
    imp.add_argument(
        "--workspace",
        metavar="DIR",
        help="the new session's workspace (default: the exported one if it is a directory "
        "here, else the current directory)",
    )
    _add_common_options(imp, after_command=True)
    tc = sub.add_parser("tool-context", help="print the tool context of an active run")
    tc.add_argument("key", nargs="?", help="sessionScopeKey (default: $AGENTD_SESSION_SCOPE_KEY)")
    _add_common_options(tc, after_command=True)
    sm = sub.add_parser(
        "scripted-model",
        help="run the scripted OpenAI-compatible model server",
        description="Serve a scripted OpenAI-compatible model on loopback (for tests and "
        "offline use). Prints one line of JSON, {baseUrl, port}, then serves until SIGTERM.",
    )
    # The same options as agentd.scripted_model.add_arguments (importing that module here
    # would cost every daemon start about 13 ms); a test keeps the two lists equal.
    sm.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sm.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    sm.add_argument("--script", help="JSON file with a list of response specs to preload")
    sm.add_argument(
        "--fixtures", help="directory of recorded transcripts for {fixture: name} specs"
    )
    sub.add_parser("schema", help="print the protocol's JSON Schema")
    return parser


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    import logging
    from pathlib import Path

    from agentd.config import load_config

    config = load_config(
        path=Path(args.config).expanduser() if args.config else None, data_dir=args.data_dir
    )
    if args.max_frame_bytes:
        import attrs

        config = attrs.evolve(config, max_frame_bytes=args.max_frame_bytes)
    for problem in config.problems:
        logging.getLogger("agentd.config").warning("configuration: %s", problem)
    return config


def _daemon_options(args: argparse.Namespace) -> list[str]:
    """The options a shared daemon is started with, paths made absolute (they are the
    editor's working directory's, and the daemon's is elsewhere): part of its identity."""
    options = ["-" + "v" * args.verbose] if args.verbose else []
    for flag, value in (
        ("--data-dir", args.data_dir),
        ("--config", args.config),
        ("--log-file", args.log_file),
    ):
        if value is not None:
            options += [flag, os.path.abspath(os.path.expanduser(value))]
    if args.max_frame_bytes is not None:
        options += ["--max-frame-bytes", str(args.max_frame_bytes)]
    return options


def _attach(args: argparse.Namespace) -> int | None:
    """`agentd` through the user's shared daemon: its exit code; None when it cannot be
    shared (then this process serves the editor)."""
    from agentd import forwarder

    try:
        verbose = args.verbose > 0 and args.log_file is None
        return forwarder.attach(_daemon_options(args), args.config, verbose)
    except forwarder.Unshared as why:
        if args.verbose or not why.expected:
            sys.stderr.write(f"agentd: running unshared: {why}\n")
        return None


def _serve_daemon(args: argparse.Namespace) -> int:
    """`agentd daemon`: listen first (a forwarder waits on `--ready-fd`), then load."""
    from agentd import shared_socket

    path = args.socket
    listener = shared_socket.new_socket()
    temporary = f"{path}.{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        listener.bind(temporary)
        os.chmod(temporary, 0o600)
        listener.listen(128)
        # Atomically over a dead daemon's socket file (the forwarder holds the lock).
        os.rename(temporary, path)
    except OSError as exc:
        _tell_ready(args.ready_fd, f"cannot listen at {path}: {exc.strerror or exc}")
        return 1
    _tell_ready(args.ready_fd, "ready")
    setup_logging(args.verbose, args.log_file)
    from agentd.daemon import serve_daemon

    # With --log-file the logs go there only, as unshared; else to each editor's stderr too.
    return serve_daemon(_config(args), listener, path, editor_logs=args.log_file is None)


def _tell_ready(fd: int | None, line: str) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, line.encode() + b"\n")
        os.close(fd)


def _serve_acp(args: argparse.Namespace) -> int:
    """`agentd acp`; with no model configured, against the bundled scripted model on
    loopback (offline), as `agentd chat` does, saying so on stderr."""
    from agentd.acp.server import serve_acp

    config = _config(args)
    if config.default_model is not None:
        return serve_acp(config)
    from agentd.scripted_model import ScriptedModelServer

    with ScriptedModelServer() as scripted:
        os.environ.update(
            OPENAI_BASE_URL=scripted.base_url, OPENAI_API_KEY="offline", AGENTD_MODEL="scripted"
        )
        sys.stderr.write(
            "agentd acp: no model configured, answering with the bundled scripted model "
            "(offline); see README, Use a real model\n"
        )
        return serve_acp(_config(args))


# `agentd` with no arguments, what editors spawn, as argparse would read it.
NO_ARGUMENTS = SimpleNamespace(
    command=None,
    config=None,
    data_dir=None,
    log_file=None,
    max_frame_bytes=None,
    no_shared=False,
    verbose=0,
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        # Attached to the shared daemon, this process is a forwarder for the editor's
        # whole session: it does not even import argparse.
        code = _attach(NO_ARGUMENTS)  # type: ignore[arg-type]
        if code is not None:
            return code
    tried_to_attach = not argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        problem = config_file_problem(args.config)
        if problem:
            sys.stderr.write(f"agentd: --config {args.config}: {problem}\n")
            return 2
    command = args.command or "serve"
    if command == "serve" and not args.no_shared and not tried_to_attach:
        code = _attach(args)  # (it makes its few files with their modes)
        if code is not None:
            return code
    from agentd import file_modes

    # Before anything is created: agentd's own files are private whatever the umask
    # (the user's umask is kept for what the tools make in the workspace).
    file_modes.make_private()
    if args.log_file is not None:
        problem = log_file_problem(args.log_file)
        if problem:
            sys.stderr.write(f"agentd: --log-file {args.log_file}: {problem}\n")
            return 2
    if command == "serve":
        setup_logging(args.verbose, args.log_file)
        from agentd.daemon import serve_native

        return serve_native(_config(args))
    if command == "daemon":
        return _serve_daemon(args)
    setup_logging(args.verbose, args.log_file)
    if command == "acp":
        return _serve_acp(args)
    if command == "chat":
        from agentd.chat.client import run_chat

        return run_chat(args)
    if command == "export":
        from agentd.session_commands import run_export

        return run_export(args)
    if command == "import":
        from agentd.session_commands import run_import

        return run_import(args)
    if command == "reindex":
        from agentd.storage.catalog import Catalog
        from agentd.storage.reindex import reindex_sync

        config = _config(args)
        catalog = Catalog(config.data_dir / "catalog.sqlite3")
        catalog.open_sync()
        count = reindex_sync(catalog.tables, config.data_dir / "sessions")
        print(f"indexed {count} sessions from {config.data_dir / 'sessions'}")
        return 0
    if command == "tool-context":
        import json

        from agentd import toolctx

        config = _config(args)
        data, why = toolctx.lookup(args.key, config.tool_context_dir)
        if data is None:
            print(why, file=sys.stderr)
            return 1
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    if command == "scripted-model":
        from agentd.scripted_model import serve

        return serve(
            host=args.host, port=args.port, script_path=args.script, fixtures=args.fixtures
        )
    if command == "schema":
        from agentd.protocol.schema import main as schema_main

        return schema_main([])
    parser.error(f"unknown command {command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
