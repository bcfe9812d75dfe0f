"""Configuration: environment variables, an optional TOML file, and defaults.

Every option has a default, so no file at all is a complete configuration. A file
with an invalid option is not fatal: the option keeps its default and the problem is
reported (logged at startup, and returned by `load_config` as `problems`).

The file is `$AGENTD_CONFIG`, else `<user config dir>/agentd/config.toml`. API keys are
read from the environment (`api_key_env`) or the file, held in memory, never written.
"""

from __future__ import annotations

import os
import re
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import attrs

DEFAULT_MAX_FRAME_BYTES = 32 * 1024 * 1024


@attrs.frozen
class ProviderConfig:
    name: str
    base_url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    headers: dict[str, str] = attrs.Factory(dict)
    max_attempts: int = 4
    first_token_timeout_s: float = 300.0
    stall_timeout_s: float = 120.0


@attrs.frozen
class ModelConfig:
    id: str
    provider: str
    # The name sent upstream; defaults to the id.
    upstream: str
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


def mcp_server_spec(name: str, raw: dict[str, Any]) -> McpServerSpec:
    """A server spec from a config table or the wire (already snake_case, seconds).
    Raises ValueError naming the offending field."""

    def get(key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = raw.get(key)
        if value is None:
            return default
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            wanted = " or ".join(k.__name__ for k in kinds)
            raise ValueError(f"{key}: expected {wanted}, got {value!r}")
        return value

    def strings(key: str, container: type) -> Any:
        value = get(key, container)
        if value is None:
            return None
        items = value.values() if container is dict else value
        if not all(isinstance(v, str) for v in items):
            raise ValueError(f"{key}: every value must be a string")
        return value

    if not name or not isinstance(name, str):
        raise ValueError("name: must be a non-empty string")
    command, url = get("command", str), get("url", str)
    if bool(command) == bool(url):
        raise ValueError("give either command (a stdio server) or url (a streamable-HTTP server)")
    if url and not url.startswith(("http://", "https://")):
        raise ValueError(f"url: expected an http:// or https:// URL, got {url!r}")
    trust = get("trust", str, "ask")
    if trust not in MCP_TRUST:
        raise ValueError(f'trust: expected "ask" or "allow", got {trust!r}')
    timeout = get("timeout", (int, float), 60.0)
    startup = get("startup_timeout", (int, float), 30.0)
    if timeout <= 0 or startup <= 0:
        raise ValueError("timeout and startup_timeout must be positive (seconds)")
    tools = strings("tools", list)
    return McpServerSpec(
        name=name,
        command=command,
        args=tuple(strings("args", list) or ()),
        env=dict(strings("env", dict) or {}),
        cwd=get("cwd", str),
        url=url,
        headers=dict(strings("headers", dict) or {}),
        enabled=get("enabled", bool, True),
        tools=tuple(tools) if tools is not None else None,
        timeout_s=float(timeout),
        startup_timeout_s=float(startup),
        trust=trust,
    )


# --- [sandbox] --------------------------------------------------------------------------
# Kept in one place (this class and `sandbox_config`) so it can move into a table-driven
# option schema as it is. The mode names are agentd.sandbox.MODES, repeated here so that
# loading the configuration imports nothing of the tool machinery.

SANDBOX_MODES = ("read-only", "workspace-write", "full-access")
SANDBOX_APPROVALS = ("always", "on-request")
SANDBOX_UNCONFINED = ("ask", "refuse")


@attrs.frozen
class SandboxConfig:
    """The `[sandbox]` table: how commands the model runs (`bash`) are confined.

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


def sandbox_config(raw: Any, problems: list[str]) -> SandboxConfig:
    """The `[sandbox]` table; a value of the wrong type or outside its choices keeps its
    default and adds a problem."""
    if raw is None:
        return SandboxConfig()
    if not isinstance(raw, dict):
        problems.append(f"sandbox: expected a table, got {raw!r}; using the defaults")
        return SandboxConfig()
    defaults = SandboxConfig()
    values: dict[str, Any] = {}
    choices = {
        "mode": SANDBOX_MODES,
        "approval": SANDBOX_APPROVALS,
        "unconfined": SANDBOX_UNCONFINED,
    }
    for key, allowed in choices.items():
        value = raw.get(key)
        if value is None:
            continue
        if value in allowed and isinstance(value, str):
            values[key] = value
        else:
            wanted = " or ".join(f'"{a}"' for a in allowed)
            problems.append(
                f'sandbox.{key}: expected {wanted}, got {value!r}; using "{getattr(defaults, key)}"'
            )
    network = raw.get("network")
    if isinstance(network, bool):
        values["network"] = network
    elif network is not None:
        problems.append(f"sandbox.network: expected true or false, got {network!r}; using false")
    for key in raw.keys() - {*choices, "network"}:
        problems.append(f"sandbox.{key}: unknown option, ignored")
    return SandboxConfig(**values)


@attrs.frozen
class Config:
    data_dir: Path
    state_dir: Path
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    default_model: str | None = None
    title_model: str | None = None
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    compaction: bool = True
    # Allow write_file/edit_file and bash without a permission/request round trip
    # (for editors that do not declare `permissionRequests`).
    allow_write_tools: bool = False
    allow_bash: bool = False
    system_prompt: str | None = None
    mcp_servers: tuple[McpServerSpec, ...] = ()
    sandbox: SandboxConfig = attrs.Factory(SandboxConfig)
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


def default_config_path(env: dict[str, str]) -> Path:
    if env.get("AGENTD_CONFIG"):
        return Path(env["AGENTD_CONFIG"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("agentd")) / "config.toml"


def _dirs(env: dict[str, str], data_dir: str | None) -> tuple[Path, Path]:
    import platformdirs

    data = data_dir or env.get("AGENTD_DATA_DIR") or platformdirs.user_data_dir("agentd")
    state = env.get("AGENTD_STATE_DIR") or platformdirs.user_state_dir("agentd")
    return Path(data).expanduser().absolute(), Path(state).expanduser().absolute()


def _decimal(value: Any, where: str, problems: list[str]) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        problems.append(f"{where}: expected a number, got {value!r}")
        return None


def _take(
    table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, problems: list[str]
) -> Any:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        problems.append(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
        return None
    return value


def load_config(
    env: dict[str, str] | None = None,
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

    providers: dict[str, ProviderConfig] = {}
    # The environment's endpoint is the provider "default", as the openai SDK reads it.
    if env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_KEY") or env.get("AGENTD_MODEL"):
        providers["default"] = ProviderConfig(
            name="default",
            base_url=env.get("OPENAI_BASE_URL") or None,
            api_key=env.get("OPENAI_API_KEY") or None,
        )
    for name, table in (raw.get("providers") or {}).items():
        where = f"providers.{name}"
        if not isinstance(table, dict):
            problems.append(f"{where}: expected a table")
            continue
        key_env = _take(table, "api_key_env", str, where, problems)
        headers = _take(table, "headers", dict, where, problems) or {}
        providers[name] = ProviderConfig(
            name=name,
            base_url=_take(table, "base_url", str, where, problems),
            api_key=(env.get(key_env) if key_env else None)
            or _take(table, "api_key", str, where, problems),
            headers={str(k): str(v) for k, v in headers.items()},
            max_attempts=_take(table, "max_attempts", int, where, problems) or 4,
            first_token_timeout_s=float(
                _take(table, "first_token_timeout", (int, float), where, problems) or 300
            ),
            stall_timeout_s=float(
                _take(table, "stall_timeout", (int, float), where, problems) or 120
            ),
        )

    models: dict[str, ModelConfig] = {}
    for model_id, table in (raw.get("models") or {}).items():
        where = f"models.{model_id}"
        if not isinstance(table, dict):
            problems.append(f"{where}: expected a table")
            continue
        provider = _take(table, "provider", str, where, problems) or "default"
        if provider not in providers:
            problems.append(f"{where}.provider: unknown provider {provider!r}")
            continue
        prices = {
            key: _decimal(table[key], f"{where}.{key}", problems)
            for key in ("input_price", "output_price", "cache_read_price", "cache_write_price")
            if key in table
        }
        models[model_id] = ModelConfig(
            id=model_id,
            provider=provider,
            upstream=_take(table, "name", str, where, problems) or model_id,
            context_window=_take(table, "context_window", int, where, problems),
            max_output_tokens=_take(table, "max_output_tokens", int, where, problems),
            input_price=prices.get("input_price") or Decimal(0),
            output_price=prices.get("output_price") or Decimal(0),
            cache_read_price=prices.get("cache_read_price"),
            cache_write_price=prices.get("cache_write_price"),
        )

    default_model = env.get("AGENTD_MODEL") or _take(raw, "default_model", str, "config", problems)
    if (
        default_model
        and default_model not in models
        and "default" in providers
        and "/" not in default_model
    ):
        models[default_model] = ModelConfig(
            id=default_model, provider="default", upstream=default_model
        )
    mcp_servers = _mcp_servers(raw, env, problems)
    max_frame = _take(raw, "max_frame_bytes", int, "config", problems)
    data, state = _dirs(env, data_dir or _take(raw, "data_dir", str, "config", problems))
    return Config(
        data_dir=data,
        state_dir=state,
        providers=providers,
        models=models,
        default_model=default_model,
        title_model=env.get("AGENTD_TITLE_MODEL")
        or _take(raw, "title_model", str, "config", problems),
        max_frame_bytes=max_frame if max_frame and max_frame > 0 else DEFAULT_MAX_FRAME_BYTES,
        compaction=bool(raw.get("compaction", True)),
        allow_write_tools=bool(raw.get("allow_write_tools", False)),
        allow_bash=bool(raw.get("allow_bash", False)),
        system_prompt=_take(raw, "system_prompt", str, "config", problems),
        mcp_servers=mcp_servers,
        sandbox=sandbox_config(raw.get("sandbox"), problems),
        config_path=path.expanduser().absolute(),
        problems=tuple(problems),
    )


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(
    values: Any, env: dict[str, str], where: str, problems: list[str]
) -> dict[str, str] | Any:
    """`${VAR}` in `env` and `headers` values, from agentd's environment (tokens need
    not sit in the file). An unset variable expands to "" and is reported."""
    if not isinstance(values, dict):
        return values

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            problems.append(f"{where}: ${{{name}}} is not set in agentd's environment")
        return env.get(name, "")

    return {k: _ENV_REFERENCE.sub(one, v) if isinstance(v, str) else v for k, v in values.items()}


def _mcp_servers(
    raw: dict[str, Any], env: dict[str, str], problems: list[str]
) -> tuple[McpServerSpec, ...]:
    """`[mcp_servers.<name>]` tables; `mcpServers` (the key other MCP clients use) is
    read too, so a server definition can be pasted as it is."""
    specs: dict[str, McpServerSpec] = {}
    for key in ("mcp_servers", "mcpServers"):
        tables = raw.get(key) or {}
        if not isinstance(tables, dict):
            problems.append(f"{key}: expected a table")
            continue
        for name, table in tables.items():
            where = f"{key}.{name}"
            if not isinstance(table, dict):
                problems.append(f"{where}: expected a table")
                continue
            table = {
                **table,
                "env": _expand(table.get("env"), env, f"{where}.env", problems),
                "headers": _expand(table.get("headers"), env, f"{where}.headers", problems),
            }
            try:
                specs[name] = mcp_server_spec(name, table)
            except ValueError as exc:
                problems.append(f"{where}: {exc}; server ignored")
    return tuple(specs.values())
