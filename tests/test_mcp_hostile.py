"""MCP servers that attack agentd: colliding tool names, results too large to hold,
children that try to outlive the server, tools/list_changed storms, servers that
never answer. The real daemon over real pipes; the servers are
tests/mcp/context_server.py (the SDK's server API), tests/mcp/hostile_server.py
(misbehaving on the wire where the SDK cannot) and a hostile HTTP server in this
process. The long versions (200 MB, 5,000 notifications) are in
tests/reliability/test_mcp_limits.py."""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import (
    CTX_TOOLS,
    chat,
    ctx_server,
    new_session,
    offered,
    pid_alive,
    statuses,
    tool_parts,
    write_config,
)

HOSTILE = Path(__file__).parent / "mcp" / "hostile_server.py"
MiB = 1024 * 1024
LIMIT = 16 * MiB


def hostile(**env: str) -> dict:
    return {
        "command": sys.executable,
        "args": [str(HOSTILE)],
        "trust": "allow",
        "timeout": 30,
        "env": env,
    }


def too_large(part: dict, server: str, tool: str) -> bool:
    state = part["state"]
    return state["status"] == "error" and state["error"] == (
        f"{server}: the result of {tool} is too large: over the 16 MiB agentd reads "
        "from a server; it was dropped"
    )


# --- tool names ------------------------------------------------------------------------


def test_colliding_names_are_unique_ranked_and_independent_of_order():
    from agentd import mcp_names
    from agentd.mcp_names import NAME_MAX, assign_names, qualified_name
    from agentd.tools import BUILTIN_TOOLS

    assert set(mcp_names.BUILTIN_TOOL_NAMES) == set(BUILTIN_TOOLS)
    pairs = [
        ("s", "x.y"),
        ("s", "x_y"),
        ("s", "x y"),
        ("s", "x/y"),
        ("gh", "create_issue"),
        ("gh_create", "issue"),
        ("gh.create", "issue"),
        ("read", "file"),  # a built-in's name
        ("s" * 40, "t" * 40 + "a"),
        ("s" * 40, "t" * 40 + "a"),  # listed twice
        ("s" * 40, "t" * 40 + "b"),
    ]
    first = assign_names(pairs, mcp_names.BUILTIN_TOOL_NAMES)
    # A tool named exactly like another's hash-suffixed name cannot take it over.
    squatter = ("s", first[("s", "x.y")].name[2:])
    pairs.append(squatter)
    rng = random.Random(7)
    results = []
    for _ in range(20):
        rng.shuffle(pairs)
        results.append(assign_names(pairs, mcp_names.BUILTIN_TOOL_NAMES))
    named = results[0]
    assert all(r == named for r in results), "names depend on the order tools are listed in"
    names = [n.name for n in named.values()]
    assert len(names) == len(set(names)) == len(set(pairs))
    assert not set(names) & set(BUILTIN_TOOLS)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", n) for n in names)
    assert all(len(n) <= NAME_MAX for n in names)
    # The unaltered name wins; the altered ones carry a hash of their own names.
    assert named[("s", "x_y")].name == "s_x_y" and not named[("s", "x_y")].renamed
    for tool in ("x.y", "x y", "x/y"):
        assert re.fullmatch(r"s_x_y_[0-9a-f]{8}", named[("s", tool)].name)
        assert named[("s", tool)].renamed
        assert "s: x_y" in named[("s", tool)].collides_with
    assert named[squatter].name == qualified_name(*squatter)
    assert named[("s", "x.y")].name != named[squatter].name
    # Across servers: the shorter server name keeps the plain name.
    assert named[("gh", "create_issue")].name == "gh_create_issue"
    assert named[("gh_create", "issue")].renamed
    assert named[("gh_create", "issue")].collides_with[0] == "gh: create_issue"
    assert named[("read", "file")].collides_with == ("built-in read_file",)
    assert named[("read", "file")].name.startswith("read_file_")
    # Names the configured servers got stay fixed when a session's servers join.
    session = assign_names([("s", "x_y"), ("t", "a")], mcp_names.BUILTIN_TOOL_NAMES, named)
    assert session[("s", "x_y")] == named[("s", "x_y")]
    joined = assign_names([("s_x", "y"), ("u", "v")], mcp_names.BUILTIN_TOOL_NAMES, named)
    assert joined[("s_x", "y")].renamed and joined[("u", "v")].name == "u_v"


def test_colliding_tools_each_reach_their_own_tool(spawn, model, tmp_path):
    """`x.y`, `x_y`, `x y` of one server and `gh` / `create_issue` against `gh_create` /
    `issue`: every tool gets its own name, each name calls its own tool, mcp/list and
    mcp/status report the collisions, and the names survive a restart with the servers
    configured in the other order and a tools/list_changed."""
    servers = {
        "s": hostile(HOSTILE_TOOLS="x.y,x_y,x y,echo,add"),
        "gh": hostile(HOSTILE_TOOLS="create_issue,echo"),
        "gh_create": hostile(HOSTILE_TOOLS="issue,echo"),
    }
    d = spawn(model.base_url, **write_config(tmp_path, servers))
    listed = d.call("mcp/list", {"connect": True}, timeout=60)["servers"]
    by_tool = {(s["name"], t["name"]): t for s in listed for t in s["tools"]}
    qualified = [t["qualifiedName"] for t in by_tool.values()]
    assert len(qualified) == len(set(qualified)), "duplicate names in mcp/list"
    names = {key: t["qualifiedName"] for key, t in by_tool.items()}
    assert names[("s", "x_y")] == "s_x_y" and names[("gh", "create_issue")] == "gh_create_issue"
    for key in (("s", "x.y"), ("s", "x y")):
        assert re.fullmatch(r"s_x_y_[0-9a-f]{8}", names[key]), names[key]
        assert "s: x_y" in by_tool[key]["collidesWith"]
    assert re.fullmatch(r"gh_create_issue_[0-9a-f]{8}", names[("gh_create", "issue")])
    assert by_tool[("gh_create", "issue")]["collidesWith"] == ["gh: create_issue"]
    assert "collidesWith" not in by_tool[("s", "echo")]
    server_info = {s["name"]: s for s in listed}
    assert server_info["gh_create"]["collisions"] == [
        f"issue is offered as {names[('gh_create', 'issue')]}: gh_create_issue is gh: create_issue's"
    ]
    assert len(server_info["s"]["collisions"]) == 2 and "collisions" not in server_info["gh"]
    # mcp/status reports them too: gh_create's, when it or gh became ready.
    reported = [
        n["params"]["server"].get("collisions")
        for n in d.notifications("mcp/status")
        if n["params"]["server"]["name"] == "gh_create"
    ]
    assert server_info["gh_create"]["collisions"] in reported
    # Each name reaches its own tool (these tools answer with their own name).
    sid = new_session(d, title="t")
    calls = [
        {"name": names[key], "arguments": {}}
        for key in by_tool
        if key[1] != "echo" and key[1] in ("x.y", "x_y", "x y", "create_issue", "issue")
    ]
    model.enqueue({"toolCalls": calls}, {"text": "ok"})
    parts = tool_parts(chat(d, sid, "call them all")["message"])
    answered = {p["tool"]: p["state"].get("output") for p in parts}
    expected = {
        names[key]: key[1]
        for key in by_tool
        if key[1] in ("x.y", "x_y", "x y", "create_issue", "issue")
    }
    assert answered == expected
    offered_names = offered(model, 0)
    assert len(offered_names) == len(set(offered_names))
    # A tools/list_changed (a tool added to s) renames nothing.
    model.enqueue({"toolCalls": [{"name": "s_add", "arguments": {"name": "x-y"}}]}, {"text": "ok"})
    chat(d, sid, "add")
    d.wait_for(
        lambda: any(
            t["name"] == "x-y" for s in d.call("mcp/list", {})["servers"] for t in s["tools"]
        )
    )
    after = {
        (s["name"], t["name"]): t["qualifiedName"]
        for s in d.call("mcp/list", {})["servers"]
        for t in s["tools"]
    }
    assert {k: v for k, v in after.items() if k in names} == names
    d.stop()
    # Another daemon, the servers configured in the other order: the same names.
    d2 = spawn(model.base_url, **write_config(tmp_path, dict(reversed(list(servers.items())))))
    again = d2.call("mcp/list", {"connect": True}, timeout=60)["servers"]
    assert {(s["name"], t["name"]): t["qualifiedName"] for s in again for t in s["tools"]} == names


def test_a_session_server_is_named_around_the_configured_ones(spawn, model, tmp_path):
    d = spawn(
        model.base_url,
        **write_config(tmp_path, {"gh": hostile(HOSTILE_TOOLS="create_issue,echo")}),
    )
    mine = new_session(d, mcpServers=[{**hostile(HOSTILE_TOOLS="issue,echo"), "name": "gh_create"}])
    listed = d.call("mcp/list", {"sessionId": mine, "connect": True}, timeout=60)["servers"]
    names = {(s["name"], t["name"]): t["qualifiedName"] for s in listed for t in s["tools"]}
    assert names[("gh", "create_issue")] == "gh_create_issue"
    assert re.fullmatch(r"gh_create_issue_[0-9a-f]{8}", names[("gh_create", "issue")])
    # Another session without it: the configured server's names are the same.
    config_only = d.call("mcp/list", {})["servers"]
    assert {t["qualifiedName"] for t in config_only[0]["tools"]} == {
        v for (s, _), v in names.items() if s == "gh"
    }


# --- result size -----------------------------------------------------------------------


def test_a_result_over_the_limit_ends_the_call_at_once_and_the_server_stays_usable(
    spawn, model, tmp_path
):
    """A stdio server's answer over 16 MiB, its id first (the Python SDK's order), last
    (the TypeScript SDK's), nowhere agentd can find it, or on a line that never ends:
    the call is a tool error naming the size (not a timeout), other calls on the same
    server are answered, and a huge notification in between is dropped unnoticed."""
    env = write_config(tmp_path, {"h": hostile(), "stall": hostile()})
    d = spawn(model.base_url, **env)
    sid = new_session(d, title="t")
    size = LIMIT + 3 * MiB
    model.enqueue(
        {
            "toolCalls": [
                {"name": "h_big", "arguments": {"bytes": size, "id": "first"}},
                {"name": "h_echo", "arguments": {"text": "between"}},
                {"name": "h_big", "arguments": {"bytes": size, "id": "last"}},
            ]
        },
        {"toolCalls": [{"name": "h_big", "arguments": {"bytes": size, "id": "middle"}}]},
        {
            "toolCalls": [
                {"name": "h_notify_big", "arguments": {"bytes": size}},
                {"name": "h_big", "arguments": {"bytes": LIMIT - 4096, "id": "last"}},
            ]
        },
        {"toolCalls": [{"name": "stall_big", "arguments": {"bytes": size, "end": False}}]},
        {"text": "done"},
    )
    message = chat(d, sid, "go", tools=["h_*", "stall_*"])["message"]
    first, between, last, middle, notified, under, endless = tool_parts(message)
    assert too_large(first, "h", "big") and too_large(last, "h", "big"), (first, last)
    assert between["state"]["status"] == "completed" and between["state"]["output"] == "between"
    assert too_large(middle, "h", "big"), middle["state"]
    assert notified["state"]["output"] == "small answer after a big notification"
    # Just under the limit: read, and cut like built-in output with the full text saved.
    output = under["state"]["output"]
    assert under["state"]["status"] == "completed" and len(output.encode()) <= 50_000
    saved = re.search(r"full output saved to (\S+)\]$", output)
    assert saved, output[-300:]
    assert Path(saved.group(1)).stat().st_size == LIMIT - 4096
    assert too_large(endless, "stall", "big"), endless["state"]
    assert message["finishReason"] == "stop"
    model.enqueue(
        {"toolCalls": [{"name": "h_echo", "arguments": {"text": "still here"}}]}, {"text": "ok"}
    )
    [again] = tool_parts(chat(d, sid, "echo", tools=["h_*"])["message"])
    assert again["state"]["output"] == "still here"
    assert statuses(d, "h") == ["starting", "ready"]


class _HostileHttp(BaseHTTPRequestHandler):
    """A streamable-HTTP MCP server whose tools answer with bodies too large: plain
    JSON without a length, one SSE event, or gzip that inflates past the limit."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(405)
        self.end_headers()

    def do_DELETE(self) -> None:
        self.send_response(200)
        self.end_headers()

    def do_POST(self) -> None:
        msg = json.loads(self.rfile.read(int(self.headers["content-length"])))
        rid = msg.get("id")
        if rid is None:
            self.send_response(202)
            self.end_headers()
            return
        method, params = msg["method"], msg.get("params") or {}
        if method == "initialize":
            result = {
                "protocolVersion": params["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "hostile-http", "version": "1"},
            }
            return self._json({"jsonrpc": "2.0", "id": rid, "result": result})
        if method == "tools/list":
            tools = [
                {"name": n, "inputSchema": {"type": "object"}}
                for n in ("json", "sse", "gzip", "echo")
            ]
            return self._json({"jsonrpc": "2.0", "id": rid, "result": {"tools": tools}})
        name = params.get("name")
        big = "x" * (LIMIT + MiB)
        if name == "echo":
            return self._json(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "result": {"content": [{"type": "text", "text": "echo"}]},
                }
            )
        body = json.dumps(
            {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": big}]}}
        ).encode()
        self.send_response(200)
        if name == "sse":
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b"event: message\ndata: " + body + b"\n\n")
        elif name == "gzip":
            self.send_header("content-type", "application/json")
            self.send_header("content-encoding", "gzip")
            self.end_headers()
            self.wfile.write(gzip.compress(body, 1))
        else:
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

    def _json(self, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hostile_http():  # type: ignore[no-untyped-def]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileHttp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    server.shutdown()
    server.server_close()


def test_an_http_answer_over_the_limit_is_a_tool_error(spawn, model, tmp_path, hostile_http):
    d = spawn(model.base_url)
    sid = new_session(
        d,
        title="t",
        mcpServers=[{"name": "web", "url": hostile_http, "trust": "allow", "timeoutMs": 30_000}],
    )
    model.enqueue(
        {"toolCalls": [{"name": f"web_{n}", "arguments": {}} for n in ("json", "sse", "gzip")]},
        {"toolCalls": [{"name": "web_echo", "arguments": {}}]},
        {"text": "done"},
    )
    parts = tool_parts(chat(d, sid, "go")["message"])
    plain, sse, zipped, echo = parts
    assert too_large(plain, "web", "json"), plain["state"]
    assert too_large(sse, "web", "sse"), sse["state"]
    assert zipped["state"]["status"] == "error" and "compressed (gzip)" in zipped["state"]["error"]
    assert echo["state"]["output"] == "echo"
    assert statuses(d, "web") == ["starting", "ready"]


# --- processes a server starts ---------------------------------------------------------

KINDS = ["plain", "setsid", "ignore_term", "double_fork", "forker"]


def _detach(d, model, sid: str, tool: str, pids_file: Path) -> list[int]:  # type: ignore[no-untyped-def]
    model.enqueue(
        {"toolCalls": [{"name": tool, "arguments": {"pids_file": str(pids_file), "kinds": KINDS}}]},
        {"text": "ok"},
    )
    [part] = tool_parts(chat(d, sid, "detach")["message"])
    assert part["state"]["status"] == "completed", part["state"]
    pids = _all_pids(pids_file)
    assert len(pids) >= len(KINDS) + 1 and all(pid_alive(p) for p in pids)
    return pids


def _all_pids(pids_file: Path) -> list[int]:
    """Every pid the children wrote, including those a forker started since."""
    return [int(p) for p in pids_file.read_text().split()]


def _tree(pid: int) -> list[int]:
    """The pids of every process below `pid`."""
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


@pytest.fixture
def pids_file(tmp_path):  # type: ignore[no-untyped-def]
    """Where the children write their pids. Whatever the test's outcome, none of them
    (nor a stubborn server) is left running: a regression must not leave a forker loose
    on the machine."""
    import psutil

    path = tmp_path / "pids"
    yield path
    for _ in range(50):  # a forker may fork while its children are killed
        killed = 0
        for pid in _all_pids(path) if path.exists() else []:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                cmdline = " ".join(proc.cmdline())
                if proc.status() != psutil.STATUS_ZOMBIE and (
                    "kind, pids = sys.argv" in cmdline or str(HOSTILE) in cmdline
                ):
                    proc.kill()
                    killed += 1
        if not killed:
            break


@pytest.mark.unshared
def test_shutdown_ends_every_process_a_server_started(spawn, model, tmp_path, pids_file):
    """A server that ignores stdin close and SIGTERM, with children in its process
    group, in new sessions, orphaned by a double fork, ignoring SIGTERM, and one that
    keeps forking: none outlives the daemon's shutdown."""
    d = spawn(model.base_url, **write_config(tmp_path, {"h": hostile(HOSTILE_STUBBORN="1")}))
    sid = new_session(d, title="t")
    _detach(d, model, sid, "h_detach", pids_file)
    tree = _tree(d.proc.pid)
    with pids_file.open("a") as f:  # for the fixture's cleanup, should this fail
        f.write("".join(f"{pid}\n" for pid in tree))
    d.stop()
    assert d.proc.returncode == 0
    left = [p for p in {*tree, *_all_pids(pids_file)} if pid_alive(p)]
    assert left == [], f"still running after shutdown: {left}"


@pytest.mark.parametrize("group", [False, True], ids=["exit", "sigkill-own-group"])
def test_a_crashed_servers_children_end_with_it(spawn, model, tmp_path, pids_file, group):
    """The server exits mid-call, or SIGKILLs its whole process group (which must not
    take the subreaper with it): its children end, and it is restarted."""
    d = spawn(model.base_url, **write_config(tmp_path, {"h": hostile()}))
    sid = new_session(d, title="t")
    _detach(d, model, sid, "h_detach", pids_file)
    model.enqueue(
        {"toolCalls": [{"name": "h_crash", "arguments": {"group": group}}]}, {"text": "hm"}
    )
    [part] = tool_parts(chat(d, sid, "crash")["message"])
    assert "the server exited" in part["state"]["error"]
    assert "hostile: crashing on purpose" in part["state"]["error"]
    d.wait_for(lambda: not any(pid_alive(p) for p in _all_pids(pids_file)), timeout=15)
    d.wait_for(lambda: statuses(d, "h")[-1:] == ["ready"], timeout=30)  # restarted


@pytest.mark.unshared
def test_kill_9_of_the_daemon_ends_every_process_a_server_started(
    spawn, model, tmp_path, pids_file
):
    """agentd cannot clean up after a SIGKILL; the subreaper each server runs under is
    told by the kernel (PR_SET_PDEATHSIG) and ends the server (one that ignores stdin
    close and SIGTERM) and everything below it."""
    d = spawn(model.base_url, **write_config(tmp_path, {"h": hostile(HOSTILE_STUBBORN="1")}))
    sid = new_session(d, title="t")
    _detach(d, model, sid, "h_detach", pids_file)
    tree = _tree(d.proc.pid)
    with pids_file.open("a") as f:
        f.write("".join(f"{pid}\n" for pid in tree))
    d.proc.kill()
    d.proc.wait(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(pid_alive(p) for p in {*tree, *_all_pids(pids_file)}):
        time.sleep(0.05)
    left = [p for p in {*tree, *_all_pids(pids_file)} if pid_alive(p)]
    assert left == [], f"still running after kill -9 of agentd: {left}"


# --- tools/list_changed storms ---------------------------------------------------------


def test_a_tools_list_changed_storm_is_coalesced(spawn, model, tmp_path):
    """1,000 notifications that change nothing: no mcp/status at all. 300 that each add
    a tool: a few relistings, not 300, and the last one sees every tool."""
    d = spawn(model.base_url, **write_config(tmp_path, {"ctx": ctx_server()}))
    sid = new_session(d, title="t")
    d.call("mcp/list", {"connect": True}, timeout=30)
    before = len(d.notifications("mcp/status"))
    model.enqueue(
        {"toolCalls": [{"name": "ctx_storm", "arguments": {"count": 1000}}]}, {"text": "ok"}
    )
    [part] = tool_parts(chat(d, sid, "storm")["message"])
    assert part["state"]["output"] == "1000 notifications sent"
    model.enqueue({"toolCalls": [{"name": "ctx_echo", "arguments": {"text": "x"}}]}, {"text": "ok"})
    chat(d, sid, "echo")  # whatever relisting the storm caused has been answered by now
    assert len(d.notifications("mcp/status")) == before
    model.enqueue(
        {"toolCalls": [{"name": "ctx_storm", "arguments": {"count": 300, "grow": True}}]},
        {"text": "ok"},
    )
    chat(d, sid, "grow")
    d.wait_for(
        lambda: d.call("mcp/list", {})["servers"][0]["tools"].__len__() == CTX_TOOLS + 300,
        timeout=20,
    )
    grown = d.notifications("mcp/status")[before:]
    assert 1 <= len(grown) <= 20, len(grown)
    assert grown[-1]["params"]["server"]["toolCount"] == CTX_TOOLS + 300


# --- servers that never answer ---------------------------------------------------------


def test_start_failures_name_what_did_not_answer_and_connect_waits_for_a_final_state(
    spawn, model, tmp_path
):
    """`mcp/list {connect}` answers once every server is ready or failed (never
    `starting`), bounded by the startup timeouts, and each error names its cause: no
    answer to initialize, no answer to tools/list, a server that exits at once (its
    stderr), a server whose teardown is slow (ignores stdin close and SIGTERM)."""
    env = write_config(
        tmp_path,
        {
            "mute_init": {**hostile(HOSTILE_MUTE="initialize"), "startup_timeout": 2},
            "mute_list": {**hostile(HOSTILE_MUTE="tools/list"), "startup_timeout": 2},
            "stubborn": {
                **hostile(HOSTILE_MUTE="tools/list", HOSTILE_STUBBORN="1"),
                "startup_timeout": 1,
            },
            "exits": {**hostile(HOSTILE_EXIT="1"), "startup_timeout": 5},
            "ok": hostile(),
        },
    )
    d = spawn(model.base_url, **env)
    servers = {s["name"]: s for s in d.call("mcp/list", {"connect": True}, timeout=30)["servers"]}
    assert {n: s["state"] for n, s in servers.items()} == {
        "mute_init": "failed",
        "mute_list": "failed",
        "stubborn": "failed",
        "exits": "failed",
        "ok": "ready",
    }
    assert servers["mute_init"]["error"] == "no answer to initialize within 2 s"
    assert servers["mute_list"]["error"] == "no answer to tools/list within 2 s"
    assert servers["stubborn"]["error"] == "no answer to tools/list within 1 s"
    assert "no licence key found" in servers["exits"]["error"]
    # A second connect does not wait: failed servers are in their backoff.
    again = {
        s["name"]: s["state"] for s in d.call("mcp/list", {"connect": True}, timeout=30)["servers"]
    }
    assert "starting" not in again.values()
