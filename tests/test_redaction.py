"""Secrets out of logs: every secret agentd receives, through every path, is masked in
every log line, exception text and traceback, on stderr and in the log file.

The end-to-end test gives a daemon at `-vv` secrets through each path (environment,
configuration file, `${VAR}` references, `session/create`, `session/update`) and drives
it into the errors that log them: stdio MCP servers that print their secrets on stderr
and on stdout (agentd logs the parse error, quoting a cut excerpt of the line) and then
die of an exception naming them; HTTP MCP servers that answer with the Authorization
header they got (agentd logs the exception, quoting it, with its traceback); a model
provider whose error messages echo them. Then it greps the logs, every file agentd
wrote, and everything it sent to the editor, for each."""

from __future__ import annotations

import http.server
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import chat, new_session, toml_value
from rpc_client import Daemon, daemon_env

from agentd import redaction

HERE = Path(__file__).parent
LEAKY = str(HERE / "mcp" / "leaky_server.py")

SECRETS = {
    "env_api_key": "sk-ENV-APIKEY-7f3a91",  # OPENAI_API_KEY
    "file_api_key": "sk-FILE-APIKEY-2b8c44",  # providers.filep.api_key
    "key_env": "llm-cred-KEYENV-5d1e07",  # providers.envp.api_key_env = "ALT_LLM_CRED"
    "provider_header": "hdr-PROVIDER-9a0b11",  # providers.filep.headers
    "named_env": "ghp_NAMED-ENV-3c2d55",  # GITHUB_TOKEN in agentd's environment
    "access_token": "tok-ACCESS-6e7f88",  # session/create accessToken
    "cfg_mcp_env": "cfg-MCP-ENV-1a2b33",  # mcp_servers.leakcfg.env
    "cfg_mcp_ref": "cfg-MCP-REF-4c5d66",  # mcp_servers.leakcfg.env = "${SERVICE_CRED}"
    "cfg_mcp_header": "cfg-MCP-HEADER-7e8f99",  # mcp_servers.webcfg.headers
    # A quote and a backslash: logged through %r or JSON, it shows escaped.
    "session_mcp_env": 'ses"MCP\\ENV-0a1b22',  # session/create mcpServers[].env
    "session_mcp_header": "ses-MCP-HEADER-3c4d55",  # session/create mcpServers[].headers
    # Long: the SDK's excerpt of a bad line cuts it, leaving a head and a tail.
    "update_mcp_env": "upd-MCP-ENV-" + "q1w2e3r4t5" * 5,  # session/update mcpServers[].env
}


def leaky(name: str, values: dict[str, str], *args: str) -> dict:
    return {
        "name": name,
        "command": sys.executable,
        "args": [LEAKY, *args],
        "env": {"LEAK_VARS": ",".join(values), **values},
        "startupTimeoutMs": 20_000,
    }


class EchoHandler(http.server.BaseHTTPRequestHandler):
    """An "MCP server" over HTTP that answers every request with a body that is not
    JSON-RPC, quoting the Authorization header it was sent."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = f"not json, you sent {self.headers.get('Authorization')}".encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    server.shutdown()
    server.server_close()
    thread.join(10)


def write_config(tmp_path: Path, base_url: str, echo_url: str) -> Path:
    s = SECRETS
    tables = {
        "providers.filep": {
            "base_url": base_url,
            "api_key": s["file_api_key"],
            "headers": {"X-Org-Token": s["provider_header"]},
            "max_attempts": 2,
        },
        "providers.envp": {"base_url": base_url, "api_key_env": "ALT_LLM_CRED", "max_attempts": 2},
        "models.filem": {"provider": "filep", "name": "scripted"},
        "models.envm": {"provider": "envp", "name": "scripted"},
        "mcp_servers.leakcfg": {
            "command": sys.executable,
            # The secrets in its arguments too: printed, they are masked all the same.
            "args": [LEAKY, s["cfg_mcp_env"], s["named_env"]],
            "env": {"LEAK_VARS": "A,B", "A": s["cfg_mcp_env"], "B": "${SERVICE_CRED}"},
        },
        "mcp_servers.webcfg": {
            "url": echo_url,
            "headers": {"Authorization": f"Bearer {s['cfg_mcp_header']}"},
        },
    }
    lines = []
    for header, table in tables.items():
        lines.append(f"[{header}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines))
    return path


def forms(secret: str) -> set[str]:
    """The secret as a log line could show it: as is, through %r, through JSON."""
    return {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}


def leaks(text: str) -> list[str]:
    """Each secret (in any form, or a head or tail of 12 characters or more) found."""
    found = []
    for name, secret in SECRETS.items():
        for form in forms(secret):
            pieces = {form} | {form[:k] for k in range(12, len(form))}
            pieces |= {form[-k:] for k in range(12, len(form))}
            found += [f"{name}: {p!r}" for p in pieces if p in text]
    return sorted(set(found))


def echo_error(status: int) -> dict:
    """An upstream error whose message echoes every secret (as a proxy might)."""
    message = "upstream says: " + " ".join(SECRETS.values())
    return {
        "error": {
            "status": status,
            "body": {"error": {"message": message, "type": "server_error"}},
            "headers": {"retry-after-ms": "10"},
        }
    }


@pytest.mark.parametrize("sink", ["log-file", "stderr"])
def test_secrets_from_every_path_stay_out_of_the_logs(tmp_path, model, echo_url, sink):
    s = SECRETS
    log_file = tmp_path / "agentd.log"
    args = ["-vv", "--log-file", str(log_file)] if sink == "log-file" else ["-vv"]
    env = daemon_env(
        tmp_path,
        model.base_url,
        OPENAI_API_KEY=s["env_api_key"],
        ALT_LLM_CRED=s["key_env"],
        GITHUB_TOKEN=s["named_env"],
        SERVICE_CRED=s["cfg_mcp_ref"],
        AGENTD_CONFIG=str(write_config(tmp_path, model.base_url, echo_url)),
    )
    d = Daemon(env, args=args)
    d.initialize(workspaceRoot=str(tmp_path))
    sid = new_session(
        d,
        title="t",
        accessToken=s["access_token"],
        mcpServers=[
            leaky("leakses", {"A": s["session_mcp_env"]}, s["session_mcp_env"]),
            {
                "name": "webses",
                "url": echo_url,
                "headers": {"Authorization": f"Token {s['session_mcp_header']}"},
            },
        ],
    )
    # Every server starts (and fails, logging what it leaked).
    servers = d.call("mcp/list", {"sessionId": sid, "connect": True}, timeout=60)["servers"]
    assert {x["name"]: x["state"] for x in servers} == {
        "leakcfg": "failed",
        "webcfg": "failed",
        "leakses": "failed",
        "webses": "failed",
    }
    d.call(
        "session/update",
        {
            "sessionId": sid,
            # The access token as an argument: the editor hands it to its own server.
            "mcpServers": [
                leaky("leakupd", {"A": s["update_mcp_env"]}, s["access_token"]),
            ],
        },
    )
    servers = d.call("mcp/list", {"sessionId": sid, "connect": True}, timeout=60)["servers"]
    assert [x["state"] for x in servers if x["name"] == "leakupd"] == ["failed"]
    # Each provider (key from the environment, the file, api_key_env) fails once with a
    # retryable error echoing the secrets (logged with the retry), then answers; the
    # last one fails for good (the error is stored in the session log).
    for model_name in (None, "filem", "envm"):
        msid = sid if model_name is None else new_session(d, title="t", model=model_name)
        model.enqueue(echo_error(503), {"text": "ok"})
        message = chat(d, msid, "hi", **({"model": model_name} if model_name else {}))["message"]
        assert message["finishReason"] == "stop", message
    model.enqueue(echo_error(401))
    failed = chat(d, sid, "again")["message"]
    assert failed["error"]["name"] == "ProviderAuthError"
    assert redaction.MASK in failed["error"]["message"]
    d.stop()

    logs = (log_file.read_text() if sink == "log-file" else "") + "".join(d.stderr_lines)
    if sink == "log-file":
        assert not d.stderr_lines, d.stderr_lines[:5]
    # The errors were logged, with their tracebacks ...
    for evidence in (
        "leaky_server: I was given [redacted]",
        "[leakupd] leaky_server: I was given [redacted]",
        "transport: 1 validation error",
        "input_value=b'not json [redacted]'",
        "input_value=b'not json [redacted]...[redacted]'",  # cut: head and tail masked
        "Traceback (most recent call last)",
        "RuntimeError: leaky_server: giving up with [redacted]",
        "model request failed (ProviderUnavailable: upstream says: [redacted] [redacted]",
        "MCP server leakses failed to start",
        "MCP server webses failed to start: Failed to parse JSON response",
    ):
        assert evidence in logs, evidence
    # The HTTP server's answer, quoting the header, inside a logged traceback.
    assert "|   Invalid JSON: expected ident at line 1 column 2 [type=json_invalid, " in logs
    assert logs.count("input_value=b'not json, you sent [redacted]'") >= 4
    # ... and no secret is in them, whole, escaped, or cut.
    assert leaks(logs) == []
    # Nor in any file agentd wrote (the failed message's error is stored), nor in what
    # it sent the editor (mcp/status errors quote a server's answer and its stderr).
    for root in (tmp_path / "data", tmp_path / "state"):
        for path in root.rglob("*"):
            if path.is_file():
                assert leaks(path.read_text(errors="replace")) == [], path
    assert leaks(json.dumps(d.messages)) == []
    assert any("[redacted]" in json.dumps(m) for m in d.notifications("mcp/status"))


def test_the_formatter_masks_messages_arguments_tracebacks_and_stack_info():
    secret = "frm-SECRET-41d2c7"
    redaction.register(secret, "Bearer brr-HEADER-19f0aa", "short", 'q"uo\\te-88aa11')
    handler_output: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_output.append(self.format(record))

    logger = logging.getLogger("agentd.test.redaction")
    logger.propagate = False
    handler = Collect()
    handler.setFormatter(redaction.RedactingFormatter("%(message)s"))
    logger.addHandler(handler)
    try:
        logger.warning("message %s", secret)
        logger.warning("dict %r", {"k": 'q"uo\\te-88aa11'})
        logger.warning("json %s", json.dumps({"k": 'q"uo\\te-88aa11'}))
        logger.warning("header credential alone: brr-HEADER-19f0aa")
        try:
            raise ValueError(f"failed with {secret}")
        except ValueError:
            logger.exception("exception")
        logger.error("exc_info", exc_info=KeyError(secret))
        # The source line stack_info shows holds the secret.
        logger.warning("stack", stack_info=True)  # frm-SECRET-41d2c7
        logger.warning("cut excerpt 'abc...%s'", secret[-10:])
        logger.warning("short secrets are not masked: short")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(handler_output)
    assert secret not in text and "brr-HEADER-19f0aa" not in text and "uo\\\\te" not in text
    assert "uo\\te" not in text and 'q\\"uo' not in text
    assert text.count("[redacted]") == 8
    assert 'logger.warning("stack", stack_info=True)  # [redacted]' in text
    assert "ValueError: failed with [redacted]" in text and "KeyError: '[redacted]'" in text
    assert "short secrets are not masked: short" in text


@pytest.mark.parametrize("length", [1, 5])
def test_values_shorter_than_six_characters_are_not_registered(length):
    registry = redaction.SecretRegistry()
    value = "abcdef"[:length]
    registry.register(value)
    assert len(registry) == 0 and registry.redact(f"x {value} y") == f"x {value} y"
    registry.register("abcdef")
    assert registry.redact("x abcdef y") == "x [redacted] y"


def test_uncaught_exceptions_are_logged_through_the_redaction(tmp_path):
    """Tracebacks Python would print itself (main thread, other threads) are masked."""
    secret = "unc-SECRET-5e6f70"
    code = textwrap.dedent(
        f"""
        import threading
        from agentd.cli import setup_logging
        setup_logging(0, None)
        def fail():
            raise OSError("thread {secret}")
        t = threading.Thread(target=fail)
        t.start()
        t.join()
        raise RuntimeError("main {secret}")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "UNC_TOKEN": secret},
    )
    assert out.returncode == 1
    assert "OSError: thread [redacted]" in out.stderr
    assert "RuntimeError: main [redacted]" in out.stderr
    assert secret not in out.stderr


@pytest.mark.parametrize("compiled", [False, True], ids=["pending", "compiled"])
def test_many_and_overlapping_secrets_are_all_masked_whole(compiled):
    """Hundreds of secrets (matched one by one until the pattern is recompiled, then
    by the pattern), secrets that contain or overlap one another, repeats."""
    registry = redaction.SecretRegistry()
    many = [f"tok-{i:04d}-{'k' * 8}" for i in range(300)]
    overlapping = ["aaaa-bbbb", "bbbb-cccc", "xx-aaaa-bbbb-yy"]
    registry.register(*overlapping)
    for value in many:
        registry.register(value)
    if compiled:
        registry.compile()
    text = " | ".join([*many[::7], "aaaa-bbbb-cccc", "xx-aaaa-bbbb-yy", many[0] * 2])
    masked = registry.redact(text)
    assert "tok-" not in masked and "kkkk" not in masked
    for piece in ("aaaa", "bbbb", "cccc", "xx-", "-yy"):
        assert piece not in masked, masked
    assert masked.count("|") == text.count("|")
