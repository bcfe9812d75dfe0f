"""The configuration file: every option type-checked, wrong values reported and replaced
by their safe default, unknown options reported, and the security-relevant ones proven
end to end (the daemon still asks before writing or running a command)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from helpers import chat, new_session
from rpc_client import Daemon, daemon_env

from agentd import config as cfg

ROOT = Path(__file__).resolve().parent.parent

# One value of each TOML type a user may write by mistake, and the numbers that make no
# sense for counts, sizes and timeouts.
WRONG_VALUES: dict[str, str] = {
    "string": '"false"',
    "empty string": '""',
    "bool": "true",
    "list": "[false]",
    "table": "{ a = 1 }",
    "float": "1.5",
    "negative": "-3",
    "zero": "0",
    "nan": "nan",
    "inf": "inf",
    "datetime": "1979-05-27T07:32:00Z",
}

# A valid entry for each kind of table, so that only the option under test is wrong.
PROVIDER_P = {"base_url": '"http://127.0.0.1:9/v1"'}
BASE = {
    "provider": {"[providers.p]": PROVIDER_P},
    "model": {"[providers.p]": PROVIDER_P, "[models.m]": {"provider": '"p"'}},
    "server": {"[mcp_servers.s]": {"command": '"srv"'}},
    "sandbox": {"[sandbox]": {}},
    "snapshots": {"[snapshots]": {}},
}


def entry_file(entry: str, key: str, text: str) -> str:
    """The base tables of `entry` with `key = text` in its last table."""
    tables = BASE[entry]
    out = []
    for i, (header, options) in enumerate(tables.items()):
        options = dict(options)
        if i == len(tables) - 1:
            options[key] = text
        out += [header, *(f"{k} = {v}" for k, v in options.items()), ""]
    return "\n".join(out)


def toml_value(text: str):  # type: ignore[no-untyped-def]
    import tomllib

    return tomllib.loads(f"v = {text}")["v"]


def cases():  # type: ignore[no-untyped-def]
    for section, entry in (
        (cfg.TOP_LEVEL, None),
        (cfg.PROVIDER, "provider"),
        (cfg.MODEL, "model"),
        (cfg.MCP_SERVER, "server"),
        (cfg.SANDBOX, "sandbox"),
        (cfg.SNAPSHOTS, "snapshots"),
    ):
        for option in section.options:
            for label, text in WRONG_VALUES.items():
                if option.kind.accepts(toml_value(text)):
                    continue
                yield pytest.param(
                    section,
                    entry,
                    option,
                    text,
                    id=f"{entry or 'top'}.{option.key}={label}",
                )


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> cfg.Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return cfg.load_config(env or {}, path=path)


def value_of(config: cfg.Config, entry: str | None, attribute: str):  # type: ignore[no-untyped-def]
    if entry is None:
        return getattr(config, attribute)
    holder = {
        "provider": config.providers.get("p"),
        "model": config.models.get("m"),
        "server": next(iter(config.mcp_servers), None),
        "sandbox": config.sandbox,
        "snapshots": config.snapshots,
    }[entry]
    assert holder is not None, f"the {entry} was dropped"
    return getattr(holder, attribute)


def default_of(section: cfg.Section, entry: str | None, attribute: str):  # type: ignore[no-untyped-def]
    if entry is None:
        return getattr(cfg.Config(), attribute)
    make = {
        "provider": lambda: cfg.ProviderConfig(name="p", base_url="http://127.0.0.1:9/v1"),
        "model": lambda: cfg.ModelConfig(id="m", provider="p"),
        "server": lambda: cfg.McpServerSpec(name="s", command="srv"),
        "sandbox": cfg.SandboxConfig,
        "snapshots": cfg.SnapshotsConfig,
    }[entry]
    return getattr(make(), attribute)


@pytest.mark.parametrize(("section", "entry", "option", "text"), list(cases()))
def test_every_option_of_the_wrong_type_keeps_its_default_and_is_reported(
    tmp_path, section, entry, option, text
):
    if entry is None:
        config = load(tmp_path, f"{option.key} = {text}\n")
    else:
        config = load(tmp_path, entry_file(entry, option.key, text))
    where = {
        None: "",
        "provider": "providers.p.",
        "model": "models.m.",
        "server": "mcp_servers.s.",
        "sandbox": "sandbox.",
        "snapshots": "snapshots.",
    }
    # One problem, naming the option by its full path, what it wanted and what it got.
    [problem] = config.problems
    got = cfg.describe_value(toml_value(text), secret=option.secret)
    assert problem.startswith(f"{where[entry]}{option.key}: expected {option.kind.name}, got {got}")
    if option.secret:
        assert "value not shown" in problem
    if option.drops_entry:
        # Its default would be unsafe: the whole provider / model / server is ignored.
        assert problem.endswith(f"; {section.entry} ignored")
        holders = {"provider": config.providers, "model": config.models}
        assert not (holders[entry] if entry in holders else config.mcp_servers)
        return
    assert problem.endswith("; using the default")
    if option.attribute:
        assert value_of(config, entry, option.attribute) == default_of(
            section, entry, option.attribute
        )


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        ("allow_bahs = true", "allow_bahs", " (did you mean allow_bash?)"),
        ("allow_write_tool = true", "allow_write_tool", " (did you mean allow_write_tools?)"),
        ("ALLOW_BASH = true", "ALLOW_BASH", ""),
        ("'allow bash' = true", "allow bash", " (did you mean allow_bash?)"),
        (
            '[providers.p]\nbase_url = "http://h/v1"\napi_key_evn = "X"',
            "providers.p.api_key_evn",
            " (did you mean api_key_env?)",
        ),
        (
            '[providers.p]\n[models.m]\nprovider = "p"\ncontext_windw = 5',
            "models.m.context_windw",
            " (did you mean context_window?)",
        ),
        (
            '[mcp_servers.s]\ncommand = "x"\ntool = ["a"]',
            "mcp_servers.s.tool",
            " (did you mean tools?)",
        ),
    ],
)
def test_unknown_options_are_reported_not_silent(tmp_path, text, key, hint):
    config = load(tmp_path, text + "\n")
    assert config.problems == (f"{key}: unknown option, ignored{hint}",)
    assert config.allow_bash is False and config.allow_write_tools is False


def test_a_valid_file_has_no_problems_and_takes_effect(tmp_path):
    """The positive control: every option right, nothing reported, every value used."""
    config = load(
        tmp_path,
        """
default_model = "m"
title_model = "m"
system_prompt = "be brief"
instructions = ["~/notes.md", "docs/*.md"]
compaction = false
allow_write_tools = true
allow_bash = true
max_frame_bytes = 4096
data_dir = "~/agentd-data"

[providers.p]
base_url = "https://example.invalid/v1"
api_key_env = "P_KEY"
headers = { X-Org = "acme" }
max_attempts = 2
first_token_timeout = 1.5
stall_timeout = 2

[models.m]
provider = "p"
name = "upstream-m"
context_window = 1000
max_output_tokens = 100
input_price = 0.15
output_price = 0
cache_read_price = 0.075
cache_write_price = 1

[mcp_servers.s]
command = "srv"
args = ["-v"]
env = { A = "b" }
cwd = "/tmp"
enabled = false
tools = []
timeout = 0.5
startup_timeout = 3
trust = "allow"
""",
        env={"P_KEY": "sk-from-the-env-123"},
    )
    assert config.problems == ()
    assert (config.allow_bash, config.allow_write_tools, config.compaction) == (True, True, False)
    assert config.max_frame_bytes == 4096 and config.system_prompt == "be brief"
    assert config.instructions == ("~/notes.md", "docs/*.md")
    assert config.data_dir == Path("~/agentd-data").expanduser()
    p = config.providers["p"]
    assert (p.api_key, p.max_attempts, p.first_token_timeout_s, p.stall_timeout_s) == (
        "sk-from-the-env-123",
        2,
        1.5,
        2.0,
    )
    m = config.models["m"]
    assert (m.upstream, m.context_window, m.input_price, m.cache_write_price) == (
        "upstream-m",
        1000,
        Decimal("0.15"),
        Decimal(1),
    )
    [s] = config.mcp_servers
    assert (s.args, s.env, s.enabled, s.tools, s.timeout_s, s.trust) == (
        ("-v",),
        {"A": "b"},
        False,
        (),
        0.5,
        "allow",
    )


def test_an_empty_file_is_the_defaults(tmp_path):
    config = load(tmp_path, "")
    assert config.problems == ()
    defaults = cfg.Config()
    for field in attrs.fields(cfg.Config):
        if field.name not in ("data_dir", "state_dir", "config_path"):
            assert getattr(config, field.name) == getattr(defaults, field.name), field.name


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("default_model = 5", "default_model: expected a non-empty string, got integer 5"),
        ("providers = 5", "providers: expected a table, got integer 5"),
        ("providers = [1]", "providers: expected a table, got list [1]"),
        ("[providers]\np = 5", "providers.p: expected a table, got integer 5; ignored"),
        ("models = { m = [] }", "models.m: expected a table, got list []; ignored"),
        (
            "mcp_servers = { s = true }",
            "mcp_servers.s: expected a table, got boolean true; ignored",
        ),
        (
            '[models.m]\nprovider = "nope"',
            "models.m.provider: unknown provider 'nope'; model ignored",
        ),
        (
            '[providers.p]\nbase_url = "ftp://h"',
            'providers.p.base_url: expected an http:// or https:// URL, got string "ftp://h"; provider ignored',
        ),
        (
            '[providers.p]\nbase_url = "http://"',
            'providers.p.base_url: expected an http:// or https:// URL, got string "http://"; provider ignored',
        ),
        (
            '[providers.p]\napi_key_env = "AGENTD_TEST_UNSET"',
            "providers.p.api_key_env: $AGENTD_TEST_UNSET is not set in agentd's environment",
        ),
        (
            '[mcp_servers.s]\nargs = ["a", 1]',
            'mcp_servers.s.args: expected a list of strings, got list ["a", 1]; server ignored',
        ),
        (
            '[mcp_servers.s]\ncommand = "x"\nurl = "http://h/mcp"',
            "mcp_servers.s: give either command (a stdio server) or url (a streamable-HTTP server); server ignored",
        ),
    ],
)
def test_tables_of_the_wrong_shape(tmp_path, text, problem):
    config = load(tmp_path, text + "\n")
    assert problem in config.problems[0]
    assert len(config.problems) == 1, config.problems


def test_secret_values_of_the_wrong_type_are_not_repeated(tmp_path):
    config = load(
        tmp_path,
        '[providers.p]\nbase_url = "http://h/v1"\napi_key = 98765432123\n'
        "headers = { Authorization = 424242424242 }\n"
        '[mcp_servers.s]\ncommand = "x"\nenv = { TOKEN = 13371337133713 }\n',
    )
    text = "\n".join(config.problems)
    assert len(config.problems) == 3
    for secret in ("98765432123", "424242424242", "13371337133713"):
        assert secret not in text


def test_the_reference_in_protocol_readme_is_generated_from_the_tables():
    readme = (ROOT / "protocol" / "README.md").read_text()
    assert cfg.options_markdown() in readme, (
        "protocol/README.md § Configuration is stale: paste `python -m agentd.config`"
    )


# --- end to end ----------------------------------------------------------------------


def write_and_bash(model, d, sid):  # type: ignore[no-untyped-def]
    model.enqueue(
        {
            "toolCalls": [
                {"name": "write_file", "arguments": {"path": "w.txt", "content": "x"}},
                {"name": "bash", "arguments": {"command": "touch b.txt"}},
            ]
        },
        {"text": "done"},
    )
    message = chat(d, sid, "go", tools=["write_file", "bash"])["message"]
    return [p for p in message["parts"] if p["type"] == "tool"]


@pytest.mark.parametrize(
    ("write", "bash"),
    [
        ('"false"', '"no"'),
        ('"true"', '"yes"'),
        ("[false]", "[true]"),
        ("1", "0"),
        ("{ on = true }", "{}"),
        ("1.0", '"1"'),
    ],
)
def test_wrong_typed_allow_options_still_ask(tmp_path, model, write, bash):
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "config.toml").write_text(f"allow_write_tools = {write}\nallow_bash = {bash}\n")
    d = Daemon(daemon_env(tmp_path, model.base_url, AGENTD_CONFIG=str(tmp_path / "config.toml")))
    try:
        d.initialize(workspaceRoot=str(ws), capabilities={"permissionRequests": True})
        asked: list[str] = []

        def answer(params):  # type: ignore[no-untyped-def]
            asked.append(params["tool"])
            return {"outcome": "reject_once"}

        d.handlers["permission/request"] = answer
        sid = new_session(d)
        tools = write_and_bash(model, d, sid)
        assert asked == ["write_file", "bash"]
        assert [t["state"]["status"] for t in tools] == ["error", "error"]
        assert not (ws / "w.txt").exists() and not (ws / "b.txt").exists()
    finally:
        d.stop()
    logged = "".join(d.stderr_lines)
    got_w = cfg.describe_value(toml_value(write))
    got_b = cfg.describe_value(toml_value(bash))
    assert (
        f"configuration: allow_write_tools: expected true or false, got {got_w}; using the default"
        in logged
    )
    assert (
        f"configuration: allow_bash: expected true or false, got {got_b}; using the default"
        in logged
    )


def test_wrong_typed_allow_options_without_the_capability_refuse(tmp_path, model):
    """An editor that cannot ask: a string "true" must not turn the tools on."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "config.toml").write_text('allow_write_tools = "true"\nallow_bash = "true"\n')
    d = Daemon(daemon_env(tmp_path, model.base_url, AGENTD_CONFIG=str(tmp_path / "config.toml")))
    try:
        d.initialize(workspaceRoot=str(ws))
        tools = write_and_bash(model, d, new_session(d))
        assert all("permission" in t["state"]["error"] for t in tools)
        assert not (ws / "w.txt").exists() and not (ws / "b.txt").exists()
    finally:
        d.stop()


def test_real_booleans_still_allow(tmp_path, model):
    """The control: `true` (a TOML boolean) does allow both without asking."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "config.toml").write_text("allow_write_tools = true\nallow_bash = true\n")
    d = Daemon(daemon_env(tmp_path, model.base_url, AGENTD_CONFIG=str(tmp_path / "config.toml")))
    try:
        d.initialize(workspaceRoot=str(ws), capabilities={"permissionRequests": True})
        d.handlers["permission/request"] = lambda p: pytest.fail("asked")
        tools = write_and_bash(model, d, new_session(d))
        assert [t["state"]["status"] for t in tools] == ["completed", "completed"]
        assert (ws / "w.txt").exists() and (ws / "b.txt").exists()
    finally:
        d.stop()
    assert "configuration:" not in "".join(d.stderr_lines)


def run_agentd(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentd", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **daemon_env(tmp_path), **env},
    )


@pytest.mark.parametrize("kind", ["missing", "directory", "missing-parent", "empty-name"])
@pytest.mark.parametrize("command", [[], ["serve"], ["reindex"], ["tool-context", "k"]])
def test_an_explicit_config_that_cannot_be_read_is_an_error(tmp_path, kind, command):
    path = {
        "missing": tmp_path / "nope.toml",
        "directory": tmp_path,
        "missing-parent": tmp_path / "no" / "such" / "config.toml",
        "empty-name": "",
    }[kind]
    out = run_agentd(tmp_path, "--config", str(path), *command)
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"agentd: --config {path}: ")
    assert ("Is a directory" if kind == "directory" else "No such file") in lines[0]
    assert out.stdout == ""


def test_a_missing_default_config_file_is_fine(tmp_path):
    """No --config: neither a missing $AGENTD_CONFIG file nor a missing default one is
    an error (the defaults are a complete configuration)."""
    d = Daemon(daemon_env(tmp_path, AGENTD_CONFIG=str(tmp_path / "absent.toml")))
    d.initialize(workspaceRoot=str(tmp_path))
    d.stop()
    assert d.proc.returncode == 0
    env = daemon_env(tmp_path)
    del env["AGENTD_CONFIG"]
    d = Daemon({**env, "AGENTD_CONFIG": "", "XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    d.initialize(workspaceRoot=str(tmp_path))
    d.stop()
    assert d.proc.returncode == 0 and "configuration:" not in "".join(d.stderr_lines)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5"])
def test_max_frame_bytes_on_the_command_line_must_be_positive(tmp_path, value):
    out = run_agentd(tmp_path, f"--max-frame-bytes={value}")
    assert out.returncode == 2
    assert re.search(
        r"--max-frame-bytes: expected a positive integer, got '?" + re.escape(value), out.stderr
    )


def test_an_explicit_valid_config_is_used(tmp_path, model):
    path = tmp_path / "elsewhere.toml"
    path.write_text('[models.mine]\nname = "scripted"\n')
    d = Daemon(daemon_env(tmp_path, model.base_url), args=["--config", str(path)])
    d.initialize(workspaceRoot=str(tmp_path))
    sid = new_session(d, model="mine")  # 1003 unless the file was read
    assert chat(d, sid, "hi")["message"]["finishReason"] == "stop"
    d.stop()
    assert d.proc.returncode == 0


@pytest.mark.parametrize("readme", ["README.md", "protocol/README.md"])
def test_the_documented_examples_have_no_problems(tmp_path, readme):
    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / readme).read_text(), re.S)
    assert blocks
    for block in blocks:
        config = load(tmp_path, block, env={"OPENAI_API_KEY": "k", "GITHUB_TOKEN": "t"})
        assert config.problems == (), block


def test_agentd_chat_reads_the_config_it_is_given(tmp_path, model):
    """`agentd --config FILE chat`: the model named there is used (not the offline
    scripted one), by the chat client and the daemon it spawns alike."""
    path = tmp_path / "chat.toml"
    path.write_text(
        f'default_model = "mine"\n[providers.p]\nbase_url = "{model.base_url}"\n'
        '[models.mine]\nprovider = "p"\nname = "scripted"\n'
    )
    model.enqueue({"text": "from the configured model"})
    env = {**daemon_env(tmp_path), "AGENTD_CONFIG": str(tmp_path / "absent.toml")}
    out = subprocess.run(
        [sys.executable, "-m", "agentd", "--config", str(path), "chat", "hello"],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    assert "offline" not in out.stderr
    assert "from the configured model" in out.stdout
