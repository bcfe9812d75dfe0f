"""agentd benchmarks: the real daemon over real pipes, the scripted model on loopback.

    python bench/run.py [--quick] [--only NAME ...]

`--only acp` runs the Agent Client Protocol figures (`agentd acp`) beside the native
ones, measured the same way in the same run.

Prints one line per figure and writes bench/results/latest.json. Targets (2-core
machine) are in README.md; each figure states what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from rpc_client import Daemon, daemon_env  # noqa: E402
from session_logs import grow_session  # noqa: E402

from agentd.scripted_model import ScriptedModelServer  # noqa: E402

RESULTS: dict[str, Any] = {}


def report(name: str, value: Any, unit: str = "", note: str = "") -> None:
    RESULTS[name] = {"value": value, "unit": unit, "note": note}
    shown = f"{value:.3f}" if isinstance(value, float) else str(value)
    print(f"{name:<44} {shown:>12} {unit:<8} {note}", flush=True)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fresh_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="agentd-bench-"))


# --- startup and listing ---------------------------------------------------------------


def bench_initialize(runs: int) -> None:
    times = []
    for _ in range(runs):
        tmp = fresh_dir()
        start = time.perf_counter()
        d = Daemon(daemon_env(tmp))
        d.call("initialize", {"processId": os.getpid()})
        times.append((time.perf_counter() - start) * 1000)
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report("spawn_to_initialize_median", statistics.median(times), "ms", f"{runs} spawns")
    report("spawn_to_initialize_p90", pct(times, 90), "ms")


def populate_catalog(tmp: Path, count: int) -> None:
    """Sessions straight into the catalog (and one log each for the first few), the way
    the daemon writes them; creating 100,000 through the protocol would take minutes."""
    d = Daemon(daemon_env(tmp))
    d.initialize()
    sample = d.call("session/create", {"title": "seed"})["session"]
    d.stop()
    db = sqlite3.connect(tmp / "data" / "catalog.sqlite3")
    now = sample["time"]["created"]
    rows = []
    for i in range(count):
        sid = f"ses_{now - i:012x}0000{i:08x}"[:28]
        rows.append(
            (
                sid,
                f"agent-{i:012x}",
                "anonymous",
                "default",
                None,
                None,
                f"Session number {i}",
                f"session number {i}",
                None,
                None,
                f"anonymous.default.agent-{i:012x}",
                now - count + i,
                now - count + i,
            )
        )
    db.executemany(
        "INSERT OR IGNORE INTO sessions (id, client_session_id, actor_key, project_key, project_id,"
        " parent_id, title, title_fold, workspace_root, model, scope_key, created, updated)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    db.commit()
    db.close()


def bench_list(count: int) -> None:
    tmp = fresh_dir()
    populate_catalog(tmp, count)
    d = Daemon(daemon_env(tmp))
    d.initialize()
    d.call("session/list", {})  # warm
    times = []
    for _ in range(50):
        start = time.perf_counter()
        d.call("session/list", {"limit": 50})
        times.append((time.perf_counter() - start) * 1000)
    report(
        f"list_first_page_{count}_median",
        statistics.median(times),
        "ms",
        "50 sessions, round trip over the pipe",
    )
    if count <= 10_000:
        times = []
        for _ in range(20):
            start = time.perf_counter()
            d.call("session/list", {"limit": 50, "query": "number 99"})
            times.append((time.perf_counter() - start) * 1000)
        report(f"list_query_{count}_median", statistics.median(times), "ms", "title search")
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def bench_walk_and_create() -> None:
    tmp = fresh_dir()
    d = Daemon(daemon_env(tmp))
    d.initialize()
    times = []
    for i in range(1000):
        start = time.perf_counter()
        d.call("session/create", {"title": f"s{i}"})
        times.append((time.perf_counter() - start) * 1000)
    report("create_median", statistics.median(times), "ms", "session/create round trip")
    report("create_p99", pct(times, 99), "ms")
    walks = []
    for _ in range(5):
        start = time.perf_counter()
        cursor, seen = None, 0
        while True:
            page = d.call("session/list", {"limit": 500, **({"cursor": cursor} if cursor else {})})
            seen += len(page["sessions"])
            cursor = page.get("nextCursor")
            if not cursor:
                break
        walks.append((time.perf_counter() - start) * 1000)
    assert seen == 1000, seen
    report("list_all_1000_by_cursor_median", statistics.median(walks), "ms", "limit 500 pages")
    report("rss_with_1000_sessions", rss_mib(d.proc.pid), "MiB", "after creating and listing")
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


# --- streaming ---------------------------------------------------------------------------


def _chat_daemon(srv: ScriptedModelServer) -> tuple[Daemon, Path]:
    tmp = fresh_dir()
    d = Daemon(daemon_env(tmp, srv.base_url))
    d.initialize(workspaceRoot=str(tmp))
    return d, tmp


def record_deltas(d: Daemon) -> list[tuple[int, str]]:
    """Receive times (time.time_ns) of every part/delta the daemon sends from now on."""
    received: list[tuple[int, str]] = []
    original = d._on_message

    def on_message(msg: dict[str, Any]) -> None:
        if msg.get("method") == "part/delta":
            received.append((time.time_ns(), msg["params"]["delta"]))
        original(msg)

    d._on_message = on_message  # type: ignore[method-assign]
    return received


def token_latencies(received: list[tuple[int, str]], sent: dict[str, int]) -> list[float]:
    """Milliseconds from the server sending each `<...>` token to the editor receiving it
    (a delta may carry several coalesced tokens)."""
    lat = []
    for recv_ns, delta in received:
        for tok in [t for t in delta.replace(">", ">\0").split("\0") if t]:
            if tok in sent:
                lat.append((recv_ns - sent[tok]) / 1e6)
    return lat


def latencies_at_5ms(d: Daemon, srv: ScriptedModelServer) -> list[float]:
    """Upstream sends a token every 5 ms; latency = editor receives it - server sent it.
    The server stamps each token with its send time (perf_counter is per-process, so
    wall clock in ns on one machine is used on both sides). A warm-up turn first."""
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "warm"}]})
    received = record_deltas(d)
    tokens = [f"<{i}>" for i in range(400)]
    srv.enqueue(
        {
            "text": "".join(tokens),
            "chunkSize": None,
            "tokens": tokens,
            "delayMs": 5,
            "stampTokens": True,
        }
    )
    d.call(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}, timeout=60
    )
    return token_latencies(received, srv.token_times())


def bench_token_latency(srv: ScriptedModelServer) -> None:
    d, tmp = _chat_daemon(srv)
    lat = latencies_at_5ms(d, srv)
    report("token_latency_median", statistics.median(lat), "ms", f"{len(lat)} tokens at 5 ms")
    report("token_latency_p99", pct(lat, 99), "ms")
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def bench_throughput(srv: ScriptedModelServer) -> None:
    d, tmp = _chat_daemon(srv)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "warm"}]})
    best = 0.0
    text = " ".join(f"tok{i}" for i in range(2000))
    for _ in range(3):
        srv.enqueue({"text": text})
        start = time.perf_counter()
        res = d.call(
            "session/chat",
            {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]},
            timeout=60,
        )
        elapsed = time.perf_counter() - start
        assert "".join(p.get("text", "") for p in res["message"]["parts"]) == text
        best = max(best, 2000 / elapsed)
    report(
        "tokens_per_second_2000_token_answer",
        best,
        "tok/s",
        "chat request to response, upstream without pauses",
    )
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def _wal_frames(wal: Path) -> tuple[list[tuple[int, bool]], int]:
    """The frames of a SQLite WAL file as (page number, ends a commit), and its page size.
    Frames whose salt is not the header's are left over from before the WAL restarted."""
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < 32:
        return [], 0
    page_size = int.from_bytes(data[8:12], "big")
    salt = data[16:24]
    frames = []
    for at in range(32, len(data) - page_size - 24 + 1, page_size + 24):
        if data[at + 8 : at + 16] != salt:
            break
        frames.append(
            (int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8] != b"\0" * 4)
        )
    return frames, page_size


def _files(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in root.rglob("*") if p.is_file()}


class DataDirWrites:
    """Bytes agentd writes to the files under its data dir over some turns, counted from
    the files (the daemon's /proc/<pid>/io write_bytes counts the 4 KiB page-cache pages
    it dirtied, not bytes, and not a page already dirty: over ten turns it read 0 in
    one run, 1.0-1.2 times what strace showed written in others):
    - the session log: its growth (it is only appended to);
    - the catalog's WAL: the frames SQLite appended (page size + 24 bytes each, and the
      32-byte header), its file truncated by a checkpoint before the turns;
    - the catalog itself: the pages a checkpoint copies from those frames (each distinct
      page once), checkpointed after the turns. agentd checkpoints every 1,000 frames,
      i.e. after ~100 turns, so this charges the turns more than they cost;
    - any other file under the data dir that grew (none expected).
    The -shm file is shared memory, mapped rather than written."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.catalog = data_dir / "catalog.sqlite3"
        self.wal = Path(f"{self.catalog}-wal")

    def _checkpoint(self) -> tuple[int, int, int]:
        """Copy the WAL into the catalog and empty it; (busy, frames, frames copied)."""
        db = sqlite3.connect(self.catalog, timeout=10)
        try:
            # TRUNCATE answers 0 frames once it has emptied the file: FULL counts them.
            busy, frames, copied = db.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
            busy += db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            db.close()
        return busy, frames, copied

    def __enter__(self) -> DataDirWrites:
        busy, _, _ = self._checkpoint()
        assert busy == 0 and self.wal.stat().st_size == 0, "the catalog's WAL was not emptied"
        self.sizes = _files(self.data_dir)
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            return
        frames, page_size = _wal_frames(self.wal)
        after = _files(self.data_dir)
        self.wal_bytes = after.get(self.wal, 0)
        assert self.wal_bytes == (32 + len(frames) * (page_size + 24) if frames else 0)
        self.commits = sum(1 for _, commit in frames if commit)
        self.frames = len(frames)
        self.page_size = page_size
        busy, logged, copied = self._checkpoint()
        assert busy == 0 and logged == copied == len(frames), (busy, logged, copied, len(frames))
        self.checkpoint_bytes = len({page for page, _ in frames}) * page_size
        skip = {self.catalog, self.wal, Path(f"{self.catalog}-shm")}
        self.logs = self.other = 0
        self.others: list[str] = []
        for path, size in after.items():
            grown = size - self.sizes.get(path, 0)
            if path in skip or grown <= 0:
                continue
            if path.name == "log.jsonl":
                self.logs += grown
            else:
                self.other += grown
                self.others.append(str(path.relative_to(self.data_dir)))

    @property
    def total(self) -> int:
        return self.logs + self.wal_bytes + self.checkpoint_bytes + self.other


def bench_disk(srv: ScriptedModelServer, delay_ms: float, turns: int) -> None:
    """Bytes written to all files under the data dir per byte of streamed text, in
    2,000-token turns (see DataDirWrites)."""
    d, tmp = _chat_daemon(srv)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "warm"}]})
    text = " ".join(f"tok{i}" for i in range(2000))
    with DataDirWrites(tmp / "data") as w:
        for _ in range(turns):
            srv.enqueue({"text": text, "delayMs": delay_ms})
            res = d.call(
                "session/chat",
                {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]},
                timeout=60 + turns * delay_ms * 2000 / 1000,
            )
            assert "".join(p.get("text", "") for p in res["message"]["parts"]) == text
    streamed = turns * len(text.encode())
    per_turn = {
        "log": w.logs / turns,
        "catalog WAL": w.wal_bytes / turns,
        "checkpoint": w.checkpoint_bytes / turns,
        "other": w.other / turns,
    }
    parts = ", ".join(f"{name} {value:,.0f}" for name, value in per_turn.items())
    pace = f"at {delay_ms:g} ms a token" if delay_ms else "upstream without pauses"
    report(
        "disk_bytes_per_streamed_byte" + (f"_{delay_ms:g}ms" if delay_ms else ""),
        w.total / streamed,
        "x",
        f"{pace}; per turn of {len(text):,} text bytes: {parts} bytes"
        f"{' (' + ', '.join(w.others) + ')' if w.others else ''}; catalog: "
        f"{w.commits / turns:g} commits, {w.frames / turns:g} pages of {w.page_size} B; "
        f"checkpoint of {turns} turns charged to them",
    )
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def bench_long_stream(srv: ScriptedModelServer, sizes: tuple[int, ...]) -> None:
    """One answer of n tiny deltas (4 characters each) as fast as the server sends them:
    the time must grow linearly with n. `session/list` is timed while it streams."""
    d, tmp = _chat_daemon(srv)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    for n in sizes:
        srv.enqueue({"text": "abc " * n, "chunkSize": 4})
        start = time.perf_counter()
        chat_id = d.request_async(
            "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}
        )
        list_ms = []
        while chat_id not in d.responses:
            t0 = time.perf_counter()
            d.call("session/list", {"limit": 1}, timeout=120)
            list_ms.append((time.perf_counter() - t0) * 1000)
        d.result(chat_id, timeout=600)
        elapsed = time.perf_counter() - start
        report(
            f"long_stream_{n // 1000}k_deltas",
            elapsed,
            "s",
            f"{4 * n / elapsed / 1e6:.2f} M chars/s; session/list meanwhile: median "
            f"{statistics.median(list_ms):.1f} ms, max {max(list_ms):.1f} ms",
        )
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def bench_big_session(srv: ScriptedModelServer, messages: int) -> None:
    """A session of `messages` tiny messages: the daemon's RSS once it has been chatted
    in, and a chat's round trip (tiny answer), against the same chat in a new session."""
    tmp = fresh_dir()
    d = Daemon(daemon_env(tmp, srv.base_url))
    d.initialize(workspaceRoot=str(tmp))
    small = d.call("session/create", {"title": "small"})["session"]["id"]
    big = d.call("session/create", {"title": "big"})["session"]["id"]
    d.call("session/chat", {"sessionId": big, "parts": [{"type": "text", "text": "hi"}]})
    d.stop()
    grow_session(tmp, big, messages // 2 - 1)
    d = Daemon(daemon_env(tmp, srv.base_url))
    d.initialize(workspaceRoot=str(tmp))

    import psutil

    proc = psutil.Process(d.proc.pid)

    def chat_ms(sid: str) -> tuple[list[float], float]:
        """Round trips, and agentd's CPU time per chat (what the daemon itself spends,
        apart from the model server parsing a long history on the other side)."""
        times = []
        cpu_before = 0.0
        for i in range(12):
            if i == 2:
                cpu = proc.cpu_times()
                cpu_before = cpu.user + cpu.system
            start = time.perf_counter()
            d.call(
                "session/chat",
                {"sessionId": sid, "parts": [{"type": "text", "text": f"hi {i}"}]},
                timeout=120,
            )
            times.append((time.perf_counter() - start) * 1000)
        cpu = proc.cpu_times()
        return times[2:], (cpu.user + cpu.system - cpu_before) * 1000 / 10

    base, base_cpu = chat_ms(small)
    times, cpu = chat_ms(big)
    report(
        f"chat_in_a_{messages // 1000}k_message_session_median",
        statistics.median(times),
        "ms",
        f"a new session: {statistics.median(base):.1f} ms",
    )
    report(
        f"agentd_cpu_per_chat_{messages // 1000}k_message_session",
        cpu,
        "ms",
        f"a new session: {base_cpu:.1f} ms",
    )
    report(f"rss_with_a_{messages // 1000}k_message_session", rss_mib(d.proc.pid), "MiB")
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def bench_fork_and_export(srv: ScriptedModelServer, messages: int, runs: int) -> None:
    """session/fork of a `messages`-message session (tool call and answer per turn), round
    trip over the pipe; and its JSON export and import."""
    tmp = fresh_dir()
    (tmp / "a.txt").write_text("alpha\n" * 20)
    d = Daemon(daemon_env(tmp, srv.base_url))
    d.initialize(workspaceRoot=str(tmp))
    sid = d.call("session/create", {"title": "long"})["session"]["id"]
    srv.enqueue(
        {"toolCalls": [{"name": "read_file", "arguments": {"path": "a.txt"}}]},
        {"text": "it says alpha " * 20},
    )
    d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "read a.txt"}]})
    d.stop()
    grow_session(tmp, sid, messages // 2 - 1)
    d = Daemon(daemon_env(tmp, srv.base_url))
    d.initialize(workspaceRoot=str(tmp))
    d.call("session/messages", {"sessionId": sid, "limit": 1})  # the log read once

    import psutil

    proc = psutil.Process(d.proc.pid)
    times, cpu = [], []
    for _ in range(runs):
        before = sum(proc.cpu_times()[:2])
        start = time.perf_counter()
        d.call("session/fork", {"sessionId": sid}, timeout=60)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((sum(proc.cpu_times()[:2]) - before) * 1000)
    log_kib = (tmp / "data" / "sessions" / sid / "log.jsonl").stat().st_size // 1024
    report(
        f"fork_{messages}_message_session_median",
        statistics.median(times),
        "ms",
        f"p90 {pct(times, 90):.1f} ms, {runs} forks, log {log_kib} KiB; target <= 100 ms",
    )
    report(f"agentd_cpu_per_fork_{messages}_messages_median", statistics.median(cpu), "ms")
    exports, imports = [], []
    for _ in range(max(3, runs // 4)):
        start = time.perf_counter()
        content = d.call("session/export", {"sessionId": sid}, timeout=60)["content"]
        exports.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        d.call("session/import", {"content": content}, timeout=60)
        imports.append((time.perf_counter() - start) * 1000)
    report(
        f"export_json_{messages}_message_session_median",
        statistics.median(exports),
        "ms",
        f"{len(content) // 1024} KiB",
    )
    report(f"import_{messages}_message_session_median", statistics.median(imports), "ms")
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def bench_concurrent_streams(srv: ScriptedModelServer, streams: int) -> None:
    d, tmp = _chat_daemon(srv)
    sids = [d.call("session/create", {"title": f"t{i}"})["session"]["id"] for i in range(streams)]
    received = record_deltas(d)
    specs = []
    for i in range(streams):
        tokens = [f"<{i}.{j}>" for j in range(100)]
        specs.append(
            {"text": "".join(tokens), "tokens": tokens, "delayMs": 20, "stampTokens": True}
        )
    srv.enqueue(*specs)
    ids = [
        d.request_async("session/chat", {"sessionId": s, "parts": [{"type": "text", "text": "go"}]})
        for s in sids
    ]
    for i in ids:
        d.result(i, timeout=120)
    lat = token_latencies(received, srv.token_times())
    report(
        f"token_latency_{streams}_streams_median",
        statistics.median(lat),
        "ms",
        f"{len(lat)} tokens, 20 ms pace each",
    )
    report(f"token_latency_{streams}_streams_p99", pct(lat, 99), "ms")
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def bench_abort(srv: ScriptedModelServer, runs: int) -> None:
    d, tmp = _chat_daemon(srv)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    times = []
    for _ in range(runs):
        srv.enqueue({"text": " ".join(["word"] * 2000), "delayMs": 5})
        seen = len(d.notifications("part/delta"))
        chat = d.request_async(
            "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}
        )
        d.wait_for(lambda s=seen: len(d.notifications("part/delta")) > s + 3)
        start = time.perf_counter()
        d.call("session/abort", {"sessionId": sid})
        times.append((time.perf_counter() - start) * 1000)
        d.result(chat)
    report("abort_to_response_median", statistics.median(times), "ms", f"{runs} aborts")
    report("abort_to_response_p99", pct(times, 99), "ms")
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


# --- ACP beside native ------------------------------------------------------------------
#
# `agentd acp` measured the way each native figure is, in the same run, the two modes
# alternating where a figure is repeated, so that both see the same machine load. The
# client is the same: rpc_client's Daemon (a reader thread, json.loads per message),
# with NDJSON lines instead of Content-Length frames.


class AcpDaemon(Daemon):
    """`agentd acp` over rpc_client's Daemon machinery, framed as NDJSON."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env, args=["acp"], spawn="exec", validate=False)

    def send(self, obj: Any) -> None:
        self.send_raw(json.dumps(obj).encode("utf-8") + b"\n")

    def _read_loop(self) -> None:
        out = self.proc.stdout
        assert out is not None
        try:
            for line in out:
                if line.strip():
                    self._on_message(json.loads(line))
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def initialize(self, **_: Any) -> Any:
        return self.call(
            "initialize",
            {"protocolVersion": 1, "clientCapabilities": {}, "clientInfo": {"name": "bench"}},
        )

    def end(self) -> None:
        """ACP has no shutdown request: the end of input ends agentd."""
        self.close_stdin()


class Native:
    """The native protocol's calls for a chat (what the ACP rows are measured against)."""

    name = "native"
    stream_method = "part/delta"

    def __init__(self, srv: ScriptedModelServer) -> None:
        self.tmp = fresh_dir()
        self.d = self.spawn(daemon_env(self.tmp, srv.base_url))
        self.d.initialize(workspaceRoot=str(self.tmp))
        self.sid = self.d.call("session/create", {"title": "t"})["session"]["id"]

    @staticmethod
    def spawn(env: dict[str, str]) -> Daemon:
        return Daemon(env, spawn="exec")

    @staticmethod
    def first_call(d: Daemon) -> Any:
        return d.call("initialize", {"processId": os.getpid()})

    def chat_async(self, text: str) -> Any:
        params = {"sessionId": self.sid, "parts": [{"type": "text", "text": text}]}
        return self.d.request_async("session/chat", params)

    def chat(self, text: str, timeout: float = 60) -> Any:
        return self.d.result(self.chat_async(text), timeout=timeout)

    @staticmethod
    def text_of(msg: dict[str, Any]) -> str | None:
        """The streamed text a message carries (None: not a text delta)."""
        if msg.get("method") == "part/delta":
            return str(msg["params"]["delta"])
        return None

    @staticmethod
    def answer_text(result: Any) -> str:
        return "".join(p.get("text", "") for p in result["message"]["parts"])

    def cancel(self) -> None:
        self.d.call("session/abort", {"sessionId": self.sid})

    def stop(self) -> None:
        self.d.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Acp(Native):
    name = "acp"
    stream_method = "session/update"

    def __init__(self, srv: ScriptedModelServer) -> None:
        self.tmp = fresh_dir()
        self.d = self.spawn(daemon_env(self.tmp, srv.base_url))
        self.d.initialize()
        params = {"cwd": str(self.tmp), "mcpServers": [], "_meta": {"agentd": {"title": "t"}}}
        self.sid = self.d.call("session/new", params)["sessionId"]

    @staticmethod
    def spawn(env: dict[str, str]) -> Daemon:
        return AcpDaemon(env)

    @staticmethod
    def first_call(d: Daemon) -> Any:
        return d.initialize()

    def chat_async(self, text: str) -> Any:
        params = {"sessionId": self.sid, "prompt": [{"type": "text", "text": text}]}
        return self.d.request_async("session/prompt", params)

    @staticmethod
    def text_of(msg: dict[str, Any]) -> str | None:
        update = msg.get("params", {}).get("update") if msg.get("method") else None
        if isinstance(update, dict) and update.get("sessionUpdate") == "agent_message_chunk":
            return str(update["content"]["text"])
        return None

    def answer_text(self, result: Any) -> str:
        del result  # not in the answer: the sum of the streamed chunks
        with self.d._cond:
            messages = list(self.d.messages)
        return "".join(t for m in messages if (t := self.text_of(m)) is not None)

    def cancel(self) -> None:
        self.d.notify("session/cancel", {"sessionId": self.sid})


MODES: tuple[type[Native], ...] = (Native, Acp)


def record_text(mode: Native) -> list[tuple[int, str]]:
    """Receive times (time.time_ns) of every streamed text piece from now on."""
    received: list[tuple[int, str]] = []
    d = mode.d
    original = d._on_message

    def on_message(msg: dict[str, Any]) -> None:
        text = mode.text_of(msg)
        if text is not None:
            received.append((time.time_ns(), text))
        original(msg)

    d._on_message = on_message  # type: ignore[method-assign]
    return received


def _side_by_side(name: str, values: dict[str, float], unit: str, note: str = "") -> None:
    """`name` for native, `acp_name` for ACP, and ACP over native in the note."""
    report(name, values["native"], unit, note)
    ratio = values["acp"] / values["native"] if values["native"] else float("nan")
    report(f"acp_{name}", values["acp"], unit, f"{ratio:.2f} x native")


def bench_spawn_both(runs: int) -> None:
    """Spawn to `initialize` answered, native and ACP alternating."""
    times: dict[str, list[float]] = {"native": [], "acp": []}
    for _ in range(runs):
        for mode in MODES:
            tmp = fresh_dir()
            start = time.perf_counter()
            d = mode.spawn(daemon_env(tmp))
            mode.first_call(d)
            times[mode.name].append((time.perf_counter() - start) * 1000)
            d.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    note = f"{runs} spawns each, alternating"
    _side_by_side(
        "spawn_to_initialize_median",
        {k: statistics.median(v) for k, v in times.items()},
        "ms",
        note,
    )
    _side_by_side("spawn_to_initialize_p90", {k: pct(v, 90) for k, v in times.items()}, "ms")


def bench_first_text_both(srv: ScriptedModelServer, runs: int) -> None:
    """A chat (native session/chat, ACP session/prompt) sent → the first text delta
    received, in a warm session; the modes alternating."""
    modes = [mode(srv) for mode in MODES]
    times: dict[str, list[float]] = {"native": [], "acp": []}
    for mode in modes:
        mode.chat("warm")
    for _ in range(runs):
        for mode in modes:
            received = record_text(mode)
            srv.enqueue({"text": "Hello there, this is the first answer."})
            start = time.time_ns()
            chat = mode.chat_async("go")
            mode.d.wait_for(lambda r=received: r)
            times[mode.name].append((received[0][0] - start) / 1e6)
            mode.d.result(chat, timeout=60)
    note = f"{runs} chats each, alternating"
    _side_by_side(
        "chat_to_first_text_median", {k: statistics.median(v) for k, v in times.items()}, "ms", note
    )
    _side_by_side("chat_to_first_text_p99", {k: pct(v, 99) for k, v in times.items()}, "ms")
    for mode in modes:
        mode.stop()


def bench_token_latency_both(srv: ScriptedModelServer, rounds: int) -> None:
    """As bench_token_latency: 400 tokens at 5 ms, server send → editor receive; `rounds`
    streams per mode, alternating, latencies pooled."""
    modes = [mode(srv) for mode in MODES]
    lat: dict[str, list[float]] = {"native": [], "acp": []}
    for mode in modes:
        mode.chat("warm")
    for r in range(rounds):
        for mode in modes:
            received = record_text(mode)
            tokens = [f"<{mode.name}{r}.{i}>" for i in range(400)]
            srv.enqueue(
                {
                    "text": "".join(tokens),
                    "chunkSize": None,
                    "tokens": tokens,
                    "delayMs": 5,
                    "stampTokens": True,
                }
            )
            mode.chat("go")
            lat[mode.name] += token_latencies(received, srv.token_times())
    note = f"{len(lat['native'])} / {len(lat['acp'])} tokens at 5 ms"
    _side_by_side(
        "token_latency_5ms_median", {k: statistics.median(v) for k, v in lat.items()}, "ms", note
    )
    _side_by_side("token_latency_5ms_p99", {k: pct(v, 99) for k, v in lat.items()}, "ms")
    for mode in modes:
        mode.stop()


def bench_throughput_both(srv: ScriptedModelServer, rounds: int) -> None:
    """As bench_throughput: a 2,000-token answer without pauses, chat request to
    response, best of `rounds` per mode, alternating."""
    modes = [mode(srv) for mode in MODES]
    best = {"native": 0.0, "acp": 0.0}
    text = " ".join(f"tok{i}" for i in range(2000))
    for mode in modes:
        mode.chat("warm")
    for _ in range(rounds):
        for mode in modes:
            with mode.d._cond:
                mode.d.messages.clear()
            srv.enqueue({"text": text})
            start = time.perf_counter()
            result = mode.chat("go")
            elapsed = time.perf_counter() - start
            assert mode.answer_text(result) == text
            best[mode.name] = max(best[mode.name], 2000 / elapsed)
    _side_by_side("tokens_per_second_2000", best, "tok/s", f"best of {rounds}, alternating")
    for mode in modes:
        mode.stop()


def bench_cancel_both(srv: ScriptedModelServer, runs: int) -> None:
    """As bench_abort: a stream at 5 ms a token, cancelled once a few deltas arrived.
    Native: session/abort sent → its answer (the existing figure), and → the chat's
    answer; ACP: session/cancel sent → the prompt's `cancelled` answer (the cancel is a
    notification: the prompt's answer is the only one)."""
    modes = [mode(srv) for mode in MODES]
    times: dict[str, list[float]] = {"native": [], "acp": []}
    native_chat_end: list[float] = []
    for _ in range(runs):
        for mode in modes:
            received = record_text(mode)
            srv.enqueue({"text": " ".join(["word"] * 2000), "delayMs": 5})
            chat = mode.chat_async("go")
            mode.d.wait_for(lambda r=received: len(r) > 3)
            start = time.perf_counter()
            mode.cancel()
            if mode.name == "native":
                times["native"].append((time.perf_counter() - start) * 1000)
            result = mode.d.result(chat)
            ended = (time.perf_counter() - start) * 1000
            if mode.name == "native":
                assert result["message"]["finishReason"] == "aborted"
                native_chat_end.append(ended)
            else:
                assert result["stopReason"] == "cancelled", result
                times["acp"].append(ended)
    note = f"{runs} each, alternating; native: abort → abort answer"
    _side_by_side(
        "cancel_to_answer_median", {k: statistics.median(v) for k, v in times.items()}, "ms", note
    )
    _side_by_side("cancel_to_answer_p99", {k: pct(v, 99) for k, v in times.items()}, "ms")
    report(
        "native_abort_to_chat_answer_median",
        statistics.median(native_chat_end),
        "ms",
        f"p99 {pct(native_chat_end, 99):.2f} ms: abort sent → the chat's own answer",
    )
    for mode in modes:
        mode.stop()


def bench_rss_growth(srv: ScriptedModelServer, turns: int) -> None:
    d, tmp = _chat_daemon(srv)
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    rss10 = 0.0
    for i in range(turns):
        if i % 50 == 0:
            sid = d.call("session/create", {"title": f"t{i}"})["session"]["id"]
        srv.enqueue({"text": "answer " * 50})
        d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]})
        if i == 9:
            rss10 = rss_mib(d.proc.pid)
        if i % 100 == 0:
            d.messages.clear()
            d.responses.clear()
    rss_end = rss_mib(d.proc.pid)
    report("rss_after_10_turns", rss10, "MiB")
    report(
        f"rss_after_{turns}_turns", rss_end, "MiB", f"growth {100 * (rss_end - rss10) / rss10:.1f}%"
    )
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def bench_mcp(srv: ScriptedModelServer, calls: int) -> None:
    """MCP tools through agentd: the time from a run needing a server to the server being
    ready (spawn, the SDK's import on first use, initialize, tools/list), and the
    duration of each call as its tool part records it (agentd → SDK → stdio → the test
    server → back), over `calls` calls of a trivial echo tool."""
    tmp = fresh_dir()
    config = tmp / "config.toml"
    server = ROOT / "tests" / "mcp" / "context_server.py"
    config.write_text(
        f'[mcp_servers.ctx]\ncommand = "{sys.executable}"\nargs = ["{server}"]\ntrust = "allow"\n'
    )
    d = Daemon(daemon_env(tmp, srv.base_url, AGENTD_CONFIG=str(config)))
    d.initialize(workspaceRoot=str(tmp))
    sid = d.call("session/create", {"title": "t"})["session"]["id"]
    started = time.perf_counter()
    d.call("mcp/list", {"connect": True}, timeout=60)
    report("mcp_server_ready", (time.perf_counter() - started) * 1000, "ms", "first need → ready")
    echo = {"name": "ctx_echo", "arguments": {"text": "x"}}
    srv.enqueue({"toolCalls": [echo] * calls}, {"text": "done"})
    result = d.call(
        "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}, timeout=120
    )
    tools = [p for p in result["message"]["parts"] if p["type"] == "tool"]
    assert all(p["state"]["status"] == "completed" for p in tools)
    durations = [p["state"]["time"]["end"] - p["state"]["time"]["start"] for p in tools]
    report("mcp_call_median", statistics.median(durations), "ms", f"{calls} echo calls")
    report("mcp_call_p99", pct(durations, 99), "ms")
    started = time.perf_counter()
    d.stop()
    report("mcp_shutdown", (time.perf_counter() - started) * 1000, "ms", "daemon stop, 1 server")
    shutil.rmtree(tmp, ignore_errors=True)


def bench_grep() -> None:
    import asyncio

    from agentd.tools import ToolEnv, run_builtin_tool

    tmp = fresh_dir()
    body = "".join(f"    value_{i} = compute(alpha, beta, {i})\n" for i in range(120)).encode()
    for d in range(100):
        sub = tmp / f"pkg{d:02d}"
        sub.mkdir()
        for f in range(100):
            (sub / f"m{f:02d}.py").write_bytes(body + (b"needle = 1\n" if f == 0 else b""))
    env = ToolEnv(workspace_root=tmp, spill_dir=tmp / ".spill", process_env={})
    rows = [
        ("grep_10000_files_median", "needle = 1", "about 50 MB, a literal"),
        ("grep_10000_files_regex_median", r"\bneedle\b|\bcompute\(gamma", "alternation, \\b"),
    ]
    for name, pattern, note in rows:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            out = asyncio.run(run_builtin_tool("grep", {"pattern": pattern}, env, call_id="b"))
            times.append((time.perf_counter() - start) * 1000)
            assert not out.is_error and out.metadata and "timedOut" not in out.metadata
        report(name, statistics.median(times), "ms", note)
    shutil.rmtree(tmp, ignore_errors=True)


def bench_sandbox(runs: int) -> None:
    """`bash` running `true`, unconfined and in the workspace-write sandbox (agentd's
    directories hidden, the run's tool-context file bound back), alternating so that
    both see the same machine load. The tool call as the run loop makes it, minus the
    model round trip."""
    import asyncio

    from agentd import sandbox
    from agentd.tools import ToolEnv, run_builtin_tool

    status = sandbox.detect()
    if status.mechanism is None:
        report("sandbox_unavailable", 0, "", str(status.reason))
        return
    tmp = fresh_dir()
    for sub in ("ws", "data/sessions/s/tool-output", "state/tool-context", "config/agentd"):
        (tmp / sub).mkdir(parents=True)
    context = tmp / "state" / "tool-context" / "k.json"
    context.write_text("{}")
    plain = ToolEnv(workspace_root=tmp / "ws", spill_dir=tmp / "data/sessions/s/tool-output")
    confinement = sandbox.Confinement(
        status.mechanism,
        "workspace-write",
        network=False,
        workspace=tmp / "ws",
        hidden=(tmp / "data", tmp / "state", tmp / "state" / "tool-context", tmp / "config/agentd"),
        readable=(context, tmp / "data/sessions/s/tool-output"),
    )
    confined = ToolEnv(
        workspace_root=plain.workspace_root, spill_dir=plain.spill_dir, sandbox=confinement
    )

    async def timed(env: ToolEnv) -> float:
        start = time.perf_counter()
        out = await run_builtin_tool("bash", {"command": "true"}, env, call_id="b")
        assert out.output == "(no output)", out
        return (time.perf_counter() - start) * 1000

    async def measure() -> tuple[list[float], list[float]]:
        unconfined, sandboxed = [], []
        for _ in range(runs):
            unconfined.append(await timed(plain))
            sandboxed.append(await timed(confined))
        return unconfined, sandboxed

    load = os.getloadavg()[0]
    unconfined, sandboxed = asyncio.run(measure())
    note = f"{runs} calls each, load average {load:.1f} on {os.cpu_count()} CPUs"
    report("bash_true_unconfined_median", statistics.median(unconfined), "ms", note)
    report("bash_true_unconfined_p90", pct(unconfined, 90), "ms")
    report("bash_true_sandboxed_median", statistics.median(sandboxed), "ms", status.mechanism.name)
    report("bash_true_sandboxed_p90", pct(sandboxed, 90), "ms")
    report(
        "sandbox_added_median",
        statistics.median(sandboxed) - statistics.median(unconfined),
        "ms",
        "target <= 15 ms",
    )
    shutil.rmtree(tmp, ignore_errors=True)


def _process_cpu(pid: int) -> float:
    """CPU milliseconds of a process and its waited-for children (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def _disk_bytes(root: Path) -> int:
    """Bytes the files under `root` take on disk (allocated blocks)."""
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*"))


def _snapshot_workspace(root: Path) -> list[Path]:
    """10,000 files of about 5 KB (50 MB) in 100 directories, each file different."""
    files = []
    for d in range(100):
        sub = root / f"pkg{d:02d}"
        sub.mkdir(parents=True)
        for f in range(100):
            n = d * 100 + f
            path = sub / f"m{f:02d}.py"
            path.write_bytes(
                b"".join(b"    value_%d = compute(alpha, beta, %d)\n" % (i, n) for i in range(120))
            )
            files.append(path)
    return files


def bench_snapshots(srv: ScriptedModelServer, runs: int) -> None:
    """Workspace snapshots (what session/revert restores from), in the 10,000-file
    workspace: one `take` as a step makes it before and after its tools run, with
    nothing changed and with 10 files changed; the disk they use over 100 steps that
    each change one 10 KB file; and `session/revert` through the daemon of a run whose
    model changed 100 files (and the unrevert), median of `runs` rounds."""
    import random

    from agentd.config import SnapshotsConfig
    from agentd.snapshots import WorkspaceStore

    tmp = fresh_dir()
    ws = tmp / "ws"
    files = _snapshot_workspace(ws)
    store = WorkspaceStore(tmp / "data", ws, SnapshotsConfig())
    start = time.perf_counter()
    store.take()
    report("snapshot_first_10000_files", (time.perf_counter() - start) * 1000, "ms", "50 MB")
    first = _disk_bytes(store.dir)
    report("snapshot_first_disk", first / 2**20, "MiB")

    cpu: list[float] = []

    def timed() -> float:
        # CPU time too (agentd's and git's): on a loaded machine the wall time is
        # mostly waiting for a CPU.
        own, children = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        store.take()
        wall = (time.perf_counter() - start) * 1000
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        git = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        cpu.append((time.process_time() - own + git) * 1000)
        return wall

    same = [timed() for _ in range(runs)]
    load = os.getloadavg()[0]
    note = f"{runs} snapshots, load average {load:.1f} on {os.cpu_count()} CPUs"
    report("snapshot_nothing_changed_median", statistics.median(same), "ms", note)
    report("snapshot_nothing_changed_p90", pct(same, 90), "ms", "target median <= 50 ms")
    report("snapshot_nothing_changed_cpu_median", statistics.median(cpu), "ms", "CPU time")
    rng = random.Random(7)
    changed = []
    cpu.clear()
    for round_no in range(runs):
        for path in rng.sample(files, 10):
            path.write_bytes(path.read_bytes()[:-20] + b"# round %06d\n" % round_no)
        changed.append(timed())
    report("snapshot_10_changed_median", statistics.median(changed), "ms", "target <= 80 ms")
    report("snapshot_10_changed_p90", pct(changed, 90), "ms")
    report("snapshot_10_changed_cpu_median", statistics.median(cpu), "ms", "CPU time")
    # 100 steps, each changing one 10 KB file between its two snapshots.
    target = ws / "pkg50" / "big.txt"
    base = _disk_bytes(store.dir)
    for step in range(100):
        store.take()
        target.write_bytes(rng.randbytes(5 * 1024).hex().encode())  # 10 KB of text
        store.take()
        del step
    grown = _disk_bytes(store.dir) - base
    report("snapshot_disk_100_steps", grown / 2**20, "MiB", "one 10 KB file each; target <= 5")
    shutil.rmtree(tmp / "data", ignore_errors=True)

    # session/revert through the daemon: a run whose bash changed 100 files.
    (tmp / "config.toml").write_text("allow_bash = true\n")
    d = Daemon(daemon_env(tmp, srv.base_url, AGENTD_CONFIG=str(tmp / "config.toml")))
    d.initialize(workspaceRoot=str(ws))
    sid = d.call("session/create", {"title": "bench"})["session"]["id"]
    srv.enqueue({"text": "ok"})
    params = {"sessionId": sid, "parts": [{"type": "text", "text": "hi"}], "tools": ["bash"]}
    kept = d.call("session/chat", params, timeout=60)["message"]["id"]
    command = "for d in pkg0*; do for f in $d/m0*.py; do echo changed >> $f; done; done"
    srv.enqueue({"toolCalls": [{"name": "bash", "arguments": {"command": command}}]}, {"text": "x"})
    d.call("session/chat", params, timeout=120)
    reverts, unreverts, revert_cpu = [], [], []
    for _ in range(runs):
        start = time.perf_counter()
        own = _process_cpu(d.proc.pid)
        result = d.call("session/revert", {"sessionId": sid, "messageId": kept}, timeout=60)
        reverts.append((time.perf_counter() - start) * 1000)
        revert_cpu.append(_process_cpu(d.proc.pid) - own)
        assert len(result["files"]) == 100 and not result["conflicts"], result
        start = time.perf_counter()
        d.call("session/unrevert", {"sessionId": sid}, timeout=60)
        unreverts.append((time.perf_counter() - start) * 1000)
    report("revert_100_files_median", statistics.median(reverts), "ms", "target <= 300 ms")
    report("revert_100_files_p90", pct(reverts, 90), "ms", "10,000-file workspace")
    report("unrevert_100_files_median", statistics.median(unreverts), "ms")
    report("revert_100_files_cpu_median", statistics.median(revert_cpu), "ms", "agentd + git")
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


# --- one daemon per user (shared mode) ------------------------------------------------


def _shared_env(tmp: Path, base_url: str | None) -> dict[str, str]:
    return daemon_env(tmp, base_url, AGENTD_SHARED="1", AGENTD_RUNTIME_DIR=str(tmp / "rt"))


def _shared_daemon_pid(tmp: Path) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"daemon" in argv and any(str(tmp / "rt").encode() in a for a in argv):
                return int(entry)
    return None


def _end_shared_daemon(tmp: Path) -> None:
    pid = _shared_daemon_pid(tmp)
    if pid is not None:
        os.kill(pid, 15)
        while _shared_daemon_pid(tmp) is not None:
            time.sleep(0.01)


def _five_token_turn(d: Daemon, srv: ScriptedModelServer, sid: str) -> float:
    """session/chat sent → answered, a 5-token answer: ms."""
    srv.enqueue({"text": "one two three four five"})
    start = time.perf_counter()
    d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "hi"}]})
    return (time.perf_counter() - start) * 1000


def bench_shared(srv: ScriptedModelServer, runs: int) -> None:
    """Start figures with the user's daemon running and with none, unshared beside them,
    measured the same way in one run; token latency, RSS of a forwarder and of a daemon
    with 10 connections and 1,000 sessions."""
    figures: dict[str, dict[str, list[float]]] = {}

    def add(mode: str, name: str, value: float) -> None:
        figures.setdefault(name, {}).setdefault(mode, []).append(value)

    for _ in range(runs):
        for mode in ("unshared", "shared cold", "shared warm"):
            tmp = fresh_dir()
            env = _shared_env(tmp, srv.base_url)
            if mode == "unshared":
                env["AGENTD_SHARED"] = "0"
            if mode == "shared warm":  # the user's daemon runs: another editor used it
                other = Daemon(env, spawn="exec")
                other.initialize(workspaceRoot=str(tmp))
                sid = other.call("session/create", {"title": "t"})["session"]["id"]
                _five_token_turn(other, srv, sid)
            start = time.perf_counter()
            d = Daemon(env, spawn="exec")
            d.call("initialize", {"processId": os.getpid(), "workspaceRoot": str(tmp)})
            add(mode, "spawn_to_initialize", (time.perf_counter() - start) * 1000)
            d.notify("initialized", {})
            sid = d.call("session/create", {"title": "t"})["session"]["id"]
            add(mode, "spawn_to_create", (time.perf_counter() - start) * 1000)
            add(mode, "first_5_token_turn", _five_token_turn(d, srv, sid))
            d.stop()
            if mode == "shared warm":
                other.stop()
            _end_shared_daemon(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
    for name, by_mode in figures.items():
        shown = {m: statistics.median(v) for m, v in by_mode.items()}
        for mode, value in shown.items():
            tag = mode.replace(" ", "_")
            report(f"{name}_{tag}_median", value, "ms", f"{runs} spawns")

    # Token latency through the forwarder (the daemon reads and writes the editor's pipes).
    tmp = fresh_dir()
    env = _shared_env(tmp, srv.base_url)
    d = Daemon(env, spawn="exec")
    d.initialize(workspaceRoot=str(tmp))
    lat = latencies_at_5ms(d, srv)
    report("shared_token_latency_median", statistics.median(lat), "ms", f"{len(lat)} at 5 ms")
    report("shared_token_latency_p99", pct(lat, 99), "ms")
    report("forwarder_rss", rss_mib(d.proc.pid), "MiB", "an attached `agentd`")
    # 10 connections, 1,000 sessions.
    others = [Daemon(env, spawn="exec") for _ in range(9)]
    for o in others:
        o.initialize(workspaceRoot=str(tmp))
    for i in range(1000):
        others[i % 9].call("session/create", {"title": f"session {i}"})
    for o in [d, *others]:
        o.call("session/list", {"limit": 500})
    pid = _shared_daemon_pid(tmp)
    assert pid is not None
    report("shared_daemon_rss_10_connections_1000_sessions", rss_mib(pid), "MiB")
    for o in [d, *others]:
        o.stop()
    _end_shared_daemon(tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    quick = args.quick

    def want(name: str) -> bool:
        return args.only is None or name in args.only

    if want("initialize"):
        bench_initialize(5 if quick else 15)
    if want("acp"):
        bench_spawn_both(5 if quick else 15)
    if want("list"):
        bench_list(10_000)
        if not quick:
            bench_list(100_000)
    if want("create"):
        bench_walk_and_create()
    if want("grep"):
        bench_grep()
    if want("sandbox"):
        bench_sandbox(50 if quick else 200)
    with ScriptedModelServer() as srv:
        if want("latency"):
            bench_token_latency(srv)
        if want("throughput"):
            bench_throughput(srv)
        if want("throughput") or want("disk"):
            bench_disk(srv, 0, 10)
            bench_disk(srv, 5, 2 if quick else 3)
        if want("big-session"):
            bench_big_session(srv, 20_000)
        if want("long-stream"):
            bench_long_stream(srv, (100_000, 200_000) if quick else (100_000, 200_000, 400_000))
        if want("fork"):
            bench_fork_and_export(srv, 1000, 10 if quick else 40)
        if want("concurrent"):
            bench_concurrent_streams(srv, 20 if quick else 100)
        if want("abort"):
            bench_abort(srv, 20 if quick else 50)
        if want("acp"):
            bench_first_text_both(srv, 10 if quick else 30)
            bench_token_latency_both(srv, 2 if quick else 3)
            bench_throughput_both(srv, 3 if quick else 5)
            bench_cancel_both(srv, 20 if quick else 50)
        if want("mcp"):
            bench_mcp(srv, 50 if quick else 200)
        if want("rss"):
            bench_rss_growth(srv, 100 if quick else 1000)
        if want("snapshots"):
            bench_snapshots(srv, 10 if quick else 30)
        if want("shared"):
            bench_shared(srv, 5 if quick else 15)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(RESULTS, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
