"""Configuration: environment variables, an optional TOML file, and defaults.

Every option has a default (the attrs classes below are fully defaulted), so no file at
all is a complete configuration. Every option the file may hold is declared once, in
the option tables (`TOP_LEVEL`, `PROVIDER`, `MODEL`, `MCP_SERVER`): its name, type and
meaning. The loader reads every table through them, so an option of the wrong type or
out of range, and an unknown option, is reported the same way, never fatal: the option
keeps its default (or, where a default would be unsafe, the provider, model or MCP
server it belongs to is ignored) and the problem is logged at startup and kept in
`Config.problems`. The same tables generate the option reference in
protocol/README.md § Configuration (`python -m agentd.config`).

The file is `$AGENTD_CONFIG`, else `<user config dir>/agentd/config.toml`. API keys are
read from the environment (`api_key_env`) or the file, held in memory, never written;
every secret read here is registered for redaction (agentd.redaction) as it is read.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from agentd import redaction

DEFAULT_MAX_FRAME_BYTES = 32 * 1024 * 1024
# The default of ToolEnv.search_timeout_s too (config must not import the tools package).
DEFAULT_SEARCH_TIMEOUT_S = 30.0


def _default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("agentd"))


def _default_state_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("agentd"))


@attrs.frozen
class ProviderConfig:
    """How to reach one OpenAI-compatible endpoint. Every field has a default.

    `base_url` None lets the SDK use OPENAI_BASE_URL or api.openai.com; `api_key`
    None sends a placeholder (local servers need none). Timeouts are in seconds:
    `first_token_timeout_s` bounds the wait from sending the request to the first
    event, `stall_timeout_s` a silence (no bytes at all) after that.
    """

    name: str = "default"
    base_url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    max_attempts: int = 4
    first_token_timeout_s: float = 300.0
    stall_timeout_s: float = 120.0
    headers: dict[str, str] = attrs.field(factory=dict, repr=False)
    connect_timeout_s: float = 10.0
    # Backoff: full jitter, base * 2**(attempt-1) capped, unless the server says
    # when (retry-after / retry-after-ms). A server asking for longer than
    # `max_retry_after_s` (e.g. a daily quota) is not retried.
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0


@attrs.frozen
class ModelConfig:
    id: str
    provider: str = "default"
    # The name sent upstream; defaults to the id.
    upstream: str = attrs.field(default=attrs.Factory(lambda self: self.id, takes_self=True))
    context_window: int | None = None
    max_output_tokens: int | None = None
    # US dollars per million tokens.
    input_price: Decimal = Decimal(0)
    output_price: Decimal = Decimal(0)
    cache_read_price: Decimal | None = None
    cache_write_price: Decimal | None = None


@attrs.frozen
class McpServerSpec:
    """One MCP server: stdio (`command`) or streamable HTTP (`url`). From the
    configuration file, or from `session/create` (`session_id` set, by the MCP server
    registry: that session only).
    `env` and `headers` may hold secrets: they stay in memory and out of logs."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = attrs.field(factory=dict, repr=False)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = attrs.field(factory=dict, repr=False)
    enabled: bool = True
    # The server's own tool names the model may call (None: all of them).
    tools: tuple[str, ...] | None = None
    timeout_s: float = 60.0
    startup_timeout_s: float = 30.0
    # "ask": every call goes through permission/request; "allow": calls run directly.
    trust: str = "ask"
    session_id: str | None = None


MCP_TRUST = ("ask", "allow")


SANDBOX_MODES = ("read-only", "workspace-write", "full-access")
SANDBOX_APPROVALS = ("always", "on-request")
SANDBOX_UNCONFINED = ("ask", "refuse")


@attrs.frozen
class SandboxConfig:
    """The `[sandbox]` table: how commands the model runs (`bash`) are confined. The mode
    names are agentd.sandbox.MODES, repeated here so that loading the configuration
    imports nothing of the tool machinery.

    `mode`: the default for sessions that do not choose one in `session/create`.
    `network`: whether confined commands reach the network (off by default).
    `approval`: "always" asks through permission/request before every command (unless
    `allow_bash`); "on-request" runs confined commands without asking and asks only for
    what leaves the sandbox (unconfined commands, reruns with more access).
    `unconfined`: when no sandbox is available here, "ask" for every command (saying it
    is unconfined), or "refuse" them all.
    """

    mode: str = "workspace-write"
    network: bool = False
    approval: str = "always"
    unconfined: str = "ask"


@attrs.frozen
class SnapshotsConfig:
    """The `[snapshots]` table: the workspace snapshots `session/revert` restores files
    from (agentd.snapshots). The limits bound one snapshot, the first one included (it
    takes in the whole workspace): more files or bytes new or changed since the last
    snapshot than this, and the step is not snapshotted, so a revert across it fails
    saying why."""

    enabled: bool = True
    max_files: int = 100_000
    max_bytes: int = 1 << 30


@attrs.frozen
class DaemonConfig:
    """The `[daemon]` table: one daemon per user, shared by every editor
    (agentd.daemon, agentd.forwarder)."""

    shared: bool = True
    idle_exit_s: float = 300.0
    on_disconnect: str = "continue"


@attrs.frozen
class Config:
    data_dir: Path = attrs.Factory(_default_data_dir)
    state_dir: Path = attrs.Factory(_default_state_dir)
    providers: dict[str, ProviderConfig] = attrs.Factory(dict)
    models: dict[str, ModelConfig] = attrs.Factory(dict)
    default_model: str | None = None
    title_model: str | None = None
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    compaction: bool = True
    # Allow write_file/edit_file and bash without a permission/request round trip
    # (for editors that do not declare `permissionRequests`).
    allow_write_tools: bool = False
    allow_bash: bool = False
    system_prompt: str | None = None
    # Instruction files or globs sent with every run beside the AGENTS.md files
    # (agentd.instructions): `~` is expanded, relative ones are under the workspace root.
    instructions: tuple[str, ...] = ()
    # The time budget of one glob or grep call (seconds).
    search_timeout_s: float = DEFAULT_SEARCH_TIMEOUT_S
    mcp_servers: tuple[McpServerSpec, ...] = ()
    sandbox: SandboxConfig = attrs.Factory(SandboxConfig)
    snapshots: SnapshotsConfig = attrs.Factory(SnapshotsConfig)
    daemon: DaemonConfig = attrs.Factory(DaemonConfig)
    # The configuration file agentd read (or would read): hidden from sandboxed commands.
    config_path: Path | None = None
    problems: tuple[str, ...] = ()

    @property
    def tool_context_dir(self) -> Path:
        return self.state_dir / "tool-context"

    def resolve_model(self, name: str | None) -> ModelConfig | None:
        name = name or self.default_model
        if not name:
            return None
        if name in self.models:
            return self.models[name]
        # `provider/model` names a model of a configured provider that has no entry.
        provider, sep, upstream = name.partition("/")
        if sep and provider in self.providers:
            return ModelConfig(id=name, provider=provider, upstream=upstream)
        if "default" in self.providers and name == self.default_model:
            return ModelConfig(id=name, provider="default", upstream=name)
        return None


# --- the option tables -----------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@attrs.frozen
class Kind:
    """What an option's value must be: `name` is how problems and the docs say it
    ("expected a positive integer, got …")."""

    name: str
    accepts: Callable[[Any], bool]


STRING = Kind("a string", lambda v: isinstance(v, str))
NAME = Kind("a non-empty string", lambda v: isinstance(v, str) and v.strip() != "")
BOOLEAN = Kind("true or false", lambda v: isinstance(v, bool))
POSITIVE_INT = Kind("a positive integer", lambda v: _is_int(v) and v > 0)
# TOML has inf and nan: neither is a timeout.
SECONDS = Kind(
    "a positive number of seconds", lambda v: _is_number(v) and math.isfinite(v) and v > 0
)
PRICE = Kind("a number, 0 or more", lambda v: _is_number(v) and math.isfinite(v) and v >= 0)
STRINGS = Kind(
    "a list of strings", lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v)
)
STRING_TABLE = Kind(
    "a table of strings",
    lambda v: isinstance(v, dict) and all(isinstance(s, str) for s in v.values()),
)


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return False
    try:
        return bool(urlsplit(value).hostname)
    except ValueError:  # a malformed port or IPv6 address
        return False


HTTP_URL = Kind("an http:// or https:// URL", _is_http_url)
SEARCH_SECONDS = Kind(
    "a number of seconds, more than 0 and at most 3600",
    lambda v: _is_number(v) and 0 < v <= 3600,
)
TRUST = Kind('"ask" or "allow"', lambda v: isinstance(v, str) and v in MCP_TRUST)
TABLE = Kind("a table", lambda v: isinstance(v, dict))


def _one_of(*choices: str) -> Kind:
    return Kind(
        " or ".join(f'"{c}"' for c in choices), lambda v: isinstance(v, str) and v in choices
    )


def _keep(value: Any) -> Any:
    return value


def _decimal(value: int | float) -> Decimal:
    return Decimal(str(value))


@attrs.frozen
class Option:
    """One option of a configuration table."""

    key: str  # its name in the file
    kind: Kind
    doc: str
    # The attribute it sets on the table's class ("" when the loader uses it otherwise);
    # the default is that attribute's default.
    field: str | None = None
    convert: Callable[[Any], Any] = _keep
    # Never repeated in a problem or a log line; registered for redaction when read.
    secret: bool = False
    # A wrong value drops the provider/model/server it belongs to: its default would be
    # unsafe (a base_url defaulting to api.openai.com, a model moving to another
    # provider, an MCP server losing its tool allow-list).
    drops_entry: bool = False
    # For the docs, when the default is not the field's.
    default_doc: str | None = None

    @property
    def attribute(self) -> str:
        return self.key if self.field is None else self.field


@attrs.frozen
class Section:
    """A kind of table in the file: the top level, `[providers.<name>]`, ..."""

    title: str
    cls: type
    options: tuple[Option, ...]
    # What is ignored when a `drops_entry` option is wrong.
    entry: str = ""

    def option(self, key: str) -> Option | None:
        return next((o for o in self.options if o.key == key), None)


TOP_LEVEL = Section(
    "top level",
    Config,
    (
        Option("default_model", NAME, "the model used when a request names none"),
        Option(
            "title_model", NAME, "the model that writes session titles", default_doc="the run's"
        ),
        Option("system_prompt", STRING, "replaces agentd's system prompt"),
        Option(
            "instructions",
            STRINGS,
            "more instruction files or globs for the system prompt, beside the AGENTS.md "
            "files (relative to the workspace root; `~` is expanded)",
            convert=tuple,
        ),
        Option(
            "compaction", BOOLEAN, "compact a session automatically when it outgrows the context"
        ),
        Option(
            "allow_write_tools",
            BOOLEAN,
            "write_file / edit_file run without a permission request",
        ),
        Option("allow_bash", BOOLEAN, "bash runs without a permission request"),
        Option("max_frame_bytes", POSITIVE_INT, "largest JSON-RPC frame accepted, in bytes"),
        Option(
            "search_timeout",
            SEARCH_SECONDS,
            "seconds one glob or grep call may take",
            field="search_timeout_s",
            convert=float,
        ),
        Option(
            "data_dir",
            NAME,
            "where sessions are stored (`--data-dir` and `$AGENTD_DATA_DIR` win)",
            default_doc="the user data dir",
        ),
        Option("providers", TABLE, "`[providers.<name>]` tables", field="", default_doc="none"),
        Option("models", TABLE, "`[models.<id>]` tables", field="", default_doc="none"),
        Option("mcp_servers", TABLE, "`[mcp_servers.<name>]` tables", field="", default_doc="none"),
        Option("sandbox", TABLE, "the `[sandbox]` table", field="", default_doc="see below"),
        Option("snapshots", TABLE, "the `[snapshots]` table", field="", default_doc="see below"),
        Option("daemon", TABLE, "the `[daemon]` table", field="", default_doc="see below"),
        Option(
            "mcpServers",
            TABLE,
            "the same, as other MCP clients spell it",
            field="",
            default_doc="none",
        ),
    ),
)

PROVIDER = Section(
    "[providers.<name>]",
    ProviderConfig,
    (
        Option(
            "base_url",
            HTTP_URL,
            "the OpenAI-compatible endpoint",
            drops_entry=True,
            default_doc="`$OPENAI_BASE_URL`, else api.openai.com",
        ),
        Option(
            "api_key_env",
            NAME,
            "the environment variable holding the API key (preferred to `api_key`)",
            field="",
            default_doc="none",
        ),
        Option("api_key", STRING, "the API key itself", secret=True),
        Option("headers", STRING_TABLE, "extra HTTP headers sent with every request", secret=True),
        Option("max_attempts", POSITIVE_INT, "tries per model call, retries included"),
        Option(
            "first_token_timeout",
            SECONDS,
            "longest wait for the first event of an answer",
            field="first_token_timeout_s",
            convert=float,
        ),
        Option(
            "stall_timeout",
            SECONDS,
            "longest silence inside an answer",
            field="stall_timeout_s",
            convert=float,
        ),
    ),
    entry="provider",
)

MODEL = Section(
    "[models.<id>]",
    ModelConfig,
    (
        Option(
            "provider",
            NAME,
            "the provider that serves it",
            drops_entry=True,
            default_doc='"default" (the environment\'s endpoint)',
        ),
        Option("name", NAME, "the name sent upstream", field="upstream", default_doc="the id"),
        Option("context_window", POSITIVE_INT, "tokens the model reads, for compaction"),
        Option("max_output_tokens", POSITIVE_INT, "most tokens an answer may have"),
        Option("input_price", PRICE, "USD per million input tokens", convert=_decimal),
        Option("output_price", PRICE, "USD per million output tokens", convert=_decimal),
        Option("cache_read_price", PRICE, "USD per million cached input tokens", convert=_decimal),
        Option(
            "cache_write_price",
            PRICE,
            "USD per million tokens written to the cache",
            convert=_decimal,
        ),
    ),
    entry="model",
)

MCP_SERVER = Section(
    "[mcp_servers.<name>]",
    McpServerSpec,
    (
        Option("command", NAME, "a stdio server's program", drops_entry=True),
        Option("args", STRINGS, "its arguments", convert=tuple, drops_entry=True),
        Option(
            "env",
            STRING_TABLE,
            "its environment, next to a minimal one (`${VAR}`: from agentd's)",
            convert=dict,
            secret=True,
            drops_entry=True,
        ),
        Option("cwd", NAME, "its working directory", drops_entry=True, default_doc="agentd's"),
        Option("url", HTTP_URL, "a streamable-HTTP server's URL", drops_entry=True),
        Option(
            "headers",
            STRING_TABLE,
            "HTTP headers for it (`${VAR}`: from agentd's environment)",
            convert=dict,
            secret=True,
            drops_entry=True,
        ),
        Option("enabled", BOOLEAN, "false: configured but never started", drops_entry=True),
        Option(
            "tools",
            STRINGS,
            "allow-list of the server's tool names",
            convert=tuple,
            drops_entry=True,
            default_doc="all",
        ),
        Option(
            "timeout",
            SECONDS,
            "longest wait for one call",
            field="timeout_s",
            convert=float,
            drops_entry=True,
        ),
        Option(
            "startup_timeout",
            SECONDS,
            "longest wait to start and list tools",
            field="startup_timeout_s",
            convert=float,
            drops_entry=True,
        ),
        Option(
            "trust", TRUST, '"ask": every call asks through permission/request', drops_entry=True
        ),
    ),
    entry="server",
)

SANDBOX = Section(
    "[sandbox]",
    SandboxConfig,
    (
        Option(
            "mode",
            _one_of(*SANDBOX_MODES),
            "how `bash` commands are confined, for sessions that choose none",
        ),
        Option("network", BOOLEAN, "confined commands reach the network"),
        Option(
            "approval",
            _one_of(*SANDBOX_APPROVALS),
            '"on-request": confined commands run without a permission request',
        ),
        Option(
            "unconfined",
            _one_of(*SANDBOX_UNCONFINED),
            'where no sandbox works: "ask" before every command, or "refuse" them',
        ),
    ),
)

SNAPSHOTS = Section(
    "[snapshots]",
    SnapshotsConfig,
    (
        Option(
            "enabled",
            BOOLEAN,
            "snapshot the workspace before steps that may change files (what "
            "`session/revert` restores)",
        ),
        Option(
            "max_files",
            POSITIVE_INT,
            "most files new or changed since the last snapshot that one snapshot takes in",
        ),
        Option(
            "max_bytes",
            POSITIVE_INT,
            "most bytes of files new or changed since the last snapshot that one snapshot takes in",
        ),
    ),
)

DAEMON = Section(
    "[daemon]",
    DaemonConfig,
    (
        Option(
            "shared",
            BOOLEAN,
            "`agentd` attaches to the user's shared daemon, starting it when none runs "
            "(false: every editor runs its own agentd; `--no-shared` says the same)",
        ),
        Option(
            "idle_exit_s",
            SECONDS,
            "the shared daemon exits once no editor and no run has been left this long",
            convert=float,
        ),
        Option(
            "on_disconnect",
            _one_of("continue", "abort"),
            "when an editor's connection ends while its run streams: the run goes on to its "
            'end ("continue") or is aborted ("abort")',
        ),
    ),
)

SECTIONS = (TOP_LEVEL, PROVIDER, MODEL, MCP_SERVER, SANDBOX, SNAPSHOTS, DAEMON)


# --- reading tables through them -------------------------------------------------------


_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (list, "list"),
    (dict, "table"),
)


def describe_value(value: Any, *, secret: bool = False) -> str:
    """`string "no"`, `integer -3`, `list [false]`: what a problem says it got. A secret's
    value is never shown."""
    kind = next((name for t, name in _TOML_TYPES if isinstance(value, t)), type(value).__name__)
    if secret:
        return f"{kind} (value not shown)"
    try:
        shown = json.dumps(value, default=str, ensure_ascii=False)
    except ValueError:  # nan and inf
        shown = str(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{kind} {shown}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def unknown_key_problem(where: str, key: str, section: Section) -> str:
    import difflib  # only for a configuration that has a problem

    known = [o.key for o in section.options]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{_join(where, key)}: unknown option, ignored{hint}"


def read_table(
    section: Section, table: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], list[tuple[Option | None, str]]]:
    """The valid options of `table` as {attribute: value}, converted, and the problems:
    (the option, or None for an unknown key; the message naming it by its full path).
    Secret values are registered for redaction before anything else is done with them."""
    values: dict[str, Any] = {}
    bad: list[tuple[Option | None, str]] = []
    for key, value in table.items():
        option = section.option(key)
        if option is None:
            bad.append((None, unknown_key_problem(where, key, section)))
            continue
        if option.secret:
            _register_secrets(value)
        if not option.kind.accepts(value):
            got = describe_value(value, secret=option.secret)
            bad.append((option, f"{_join(where, key)}: expected {option.kind.name}, got {got}"))
            continue
        if option.attribute:
            values[option.attribute] = option.convert(value)
    return values, bad


def report(section: Section, bad: list[tuple[Option | None, str]], problems: list[str]) -> bool:
    """Add the problems of one table to `problems`, saying what became of each; False
    when the entry must be ignored."""
    usable = not any(o is not None and o.drops_entry for o, _ in bad)
    for option, message in bad:
        if option is None:
            problems.append(message)
        elif not usable:
            problems.append(f"{message}; {section.entry} ignored")
        else:
            problems.append(f"{message}; using the default")
    return usable


def _register_secrets(value: Any) -> None:
    if isinstance(value, str):
        redaction.register(value)
    elif isinstance(value, dict):
        redaction.register(*(v for v in value.values() if isinstance(v, str)))


def mcp_server_spec(name: str, raw: Mapping[str, Any], where: str = "") -> McpServerSpec:
    """A server spec from the wire (already snake_case, seconds; None means absent).
    Raises ValueError naming the first offending field as `<where>.<field>`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{_join(where, 'name')}: expected a non-empty string")
    values, bad = read_table(MCP_SERVER, {k: v for k, v in raw.items() if v is not None}, where)
    known = [message for option, message in bad if option is not None]
    if known:
        raise ValueError(known[0])
    problem = _one_transport(values)
    if problem:
        raise ValueError(f"{where}: {problem}" if where else problem)
    return McpServerSpec(name=name, **values)


def _one_transport(values: Mapping[str, Any]) -> str | None:
    if bool(values.get("command")) == bool(values.get("url")):
        return "give either command (a stdio server) or url (a streamable-HTTP server)"
    return None


# --- loading -----------------------------------------------------------------------------


def default_config_path(env: Mapping[str, str]) -> Path:
    if env.get("AGENTD_CONFIG"):
        return Path(env["AGENTD_CONFIG"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("agentd")) / "config.toml"


def _dirs(env: Mapping[str, str], data_dir: str | None) -> tuple[Path, Path]:
    data = Path(data_dir or env.get("AGENTD_DATA_DIR") or _default_data_dir())
    state = Path(env.get("AGENTD_STATE_DIR") or _default_state_dir())
    return data.expanduser().absolute(), state.expanduser().absolute()


def _entries(raw: Mapping[str, Any], key: str, problems: list[str]) -> dict[str, Any]:
    """The `[<key>.<name>]` tables, each checked to be a table."""
    tables = raw.get(key)
    if tables is None:
        return {}
    if not isinstance(tables, dict):
        return {}  # reported by the top-level read (expected a table)
    out = {}
    for name, table in tables.items():
        if isinstance(table, dict):
            out[name] = table
        else:
            problems.append(f"{key}.{name}: expected a table, got {describe_value(table)}; ignored")
    return out


def load_config(
    env: Mapping[str, str] | None = None,
    *,
    path: Path | None = None,
    data_dir: str | None = None,
) -> Config:
    env = dict(os.environ if env is None else env)
    problems: list[str] = []
    path = path or default_config_path(env)
    raw: dict[str, Any] = {}
    if path.is_file():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: {exc}; using defaults")

    top, bad = read_table(TOP_LEVEL, raw, "")
    report(TOP_LEVEL, bad, problems)
    data, state = _dirs(env, data_dir or top.pop("data_dir", None))
    top["default_model"] = env.get("AGENTD_MODEL") or top.get("default_model")
    top["title_model"] = env.get("AGENTD_TITLE_MODEL") or top.get("title_model")
    providers = _providers(raw, env, problems)
    models = _models(raw, providers, problems)
    default_model = top["default_model"]
    if (
        default_model
        and default_model not in models
        and "default" in providers
        and "/" not in default_model
    ):
        models[default_model] = ModelConfig(id=default_model)
    return Config(
        data_dir=data,
        state_dir=state,
        providers=providers,
        models=models,
        mcp_servers=_mcp_servers(raw, env, problems),
        sandbox=_section_table(raw, SANDBOX, "sandbox", problems),
        snapshots=_section_table(raw, SNAPSHOTS, "snapshots", problems),
        daemon=_section_table(raw, DAEMON, "daemon", problems),
        config_path=path.expanduser().absolute(),
        problems=tuple(problems),
        **top,
    )


def _section_table(raw: Mapping[str, Any], section: Section, key: str, problems: list[str]) -> Any:
    """A `[key]` table read through its option table (defaults when absent, or when
    the top level already reported it as the wrong type)."""
    table = raw.get(key)
    if not isinstance(table, dict):
        return section.cls()
    values, bad = read_table(section, table, key)
    report(section, bad, problems)
    return section.cls(**values)


def _providers(
    raw: Mapping[str, Any], env: Mapping[str, str], problems: list[str]
) -> dict[str, ProviderConfig]:
    providers: dict[str, ProviderConfig] = {}
    # The environment's endpoint is the provider "default", as the openai SDK reads it.
    if env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_KEY") or env.get("AGENTD_MODEL"):
        redaction.register(env.get("OPENAI_API_KEY"))
        providers["default"] = ProviderConfig(
            name="default",
            base_url=env.get("OPENAI_BASE_URL") or None,
            api_key=env.get("OPENAI_API_KEY") or None,
        )
    for name, table in _entries(raw, "providers", problems).items():
        where = f"providers.{name}"
        values, bad = read_table(PROVIDER, table, where)
        if not report(PROVIDER, bad, problems):
            continue
        key_env = table.get("api_key_env") if isinstance(table.get("api_key_env"), str) else None
        if key_env:
            if env.get(key_env):
                redaction.register(env[key_env])
                values["api_key"] = env[key_env]
            elif "api_key" not in values:
                problems.append(
                    f"{where}.api_key_env: ${key_env} is not set in agentd's environment"
                )
        providers[name] = ProviderConfig(name=name, **values)
    return providers


def _models(
    raw: Mapping[str, Any], providers: Mapping[str, ProviderConfig], problems: list[str]
) -> dict[str, ModelConfig]:
    models: dict[str, ModelConfig] = {}
    for model_id, table in _entries(raw, "models", problems).items():
        where = f"models.{model_id}"
        values, bad = read_table(MODEL, table, where)
        if not report(MODEL, bad, problems):
            continue
        provider = values.setdefault("provider", "default")
        if provider not in providers:
            problems.append(f"{where}.provider: unknown provider {provider!r}; model ignored")
            continue
        models[model_id] = ModelConfig(id=model_id, **values)
    return models


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(values: Any, env: Mapping[str, str], where: str, problems: list[str]) -> Any:
    """`${VAR}` in `env` and `headers` values, from agentd's environment (tokens need
    not sit in the file). An unset variable expands to "" and is reported. What a
    reference expands to is a secret, registered for redaction."""
    if not isinstance(values, dict):
        return values

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            problems.append(f"{where}: ${{{name}}} is not set in agentd's environment")
        redaction.register(env.get(name))
        return env.get(name, "")

    return {k: _ENV_REFERENCE.sub(one, v) if isinstance(v, str) else v for k, v in values.items()}


def _mcp_servers(
    raw: Mapping[str, Any], env: Mapping[str, str], problems: list[str]
) -> tuple[McpServerSpec, ...]:
    """`[mcp_servers.<name>]` tables; `mcpServers` (the key other MCP clients use) is
    read too, so a server definition can be pasted as it is."""
    specs: dict[str, McpServerSpec] = {}
    for key in ("mcp_servers", "mcpServers"):
        for name, table in _entries(raw, key, problems).items():
            where = f"{key}.{name}"
            table = {
                **table,
                **{
                    k: _expand(table[k], env, f"{where}.{k}", problems)
                    for k in ("env", "headers")
                    if k in table
                },
            }
            values, bad = read_table(MCP_SERVER, table, where)
            if not report(MCP_SERVER, bad, problems):
                continue
            problem = _one_transport(values)
            if problem:
                problems.append(f"{where}: {problem}; server ignored")
                continue
            specs[name] = McpServerSpec(name=name, **values)
    return tuple(specs.values())


# --- the option reference ----------------------------------------------------------------


def _default_text(section: Section, option: Option) -> str:
    if option.default_doc is not None:
        return option.default_doc
    field = attrs.fields_dict(section.cls)[option.attribute]
    default: Any = field.default
    factory = getattr(default, "factory", None)
    if factory is not None:
        default = None if default.takes_self else factory()
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, str):
        return f'"{default}"'
    if isinstance(default, tuple | list):
        return "[]"
    if isinstance(default, dict):
        return "{}"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def options_markdown() -> str:
    """The option reference in protocol/README.md § Configuration, from the tables."""
    out: list[str] = []
    for section in SECTIONS:
        out += [f"`{section.title}`" if section is not TOP_LEVEL else "Top level:", ""]
        if section is MCP_SERVER:
            out += [
                "A wrong value in a server's table: the server is ignored (a default could "
                "widen what it may do).",
                "",
            ]
        out += ["| option | type | default | meaning |", "|---|---|---|---|"]
        for o in section.options:
            meaning = o.doc
            if o.drops_entry and section is not MCP_SERVER:
                meaning += f" (a wrong value: the {section.entry} is ignored)"
            out.append(f"| `{o.key}` | {o.kind.name} | {_default_text(section, o)} | {meaning} |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(options_markdown())
