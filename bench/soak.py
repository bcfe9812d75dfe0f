"""Long reliability runs (the CI suite runs bounded versions of the same checks).

python bench/soak.py turns [--count 10000]   RSS, descriptors and threads over N turns
python bench/soak.py crash [--count 500]     kill -9 at random moments, restart, check
python bench/soak.py storm [--count 1000]    chat + abort pairs with random delays
python bench/soak.py mcp [--count 5000]      hostile MCP servers at full size: 200 MB
                                             results, storms of N tools/list_changed
                                             that each add a tool
python bench/soak.py framing [--count 200000] random junk and frames through the parser
                                              (in process), and count/100 through a
                                              daemon over pipes, from a random seed
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

import framing_cases  # noqa: E402
from rpc_client import Daemon, daemon_env  # noqa: E402
from test_faults import check_storage  # noqa: E402
from test_framing import check_stream  # noqa: E402

from agentd.scripted_model import ScriptedModelServer  # noqa: E402


def proc_stats(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    return {
        "rssMiB": round(rss, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
    }


def soak_turns(count: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="agentd-soak-"))
    with ScriptedModelServer() as srv:
        d = Daemon(daemon_env(tmp, srv.base_url))
        d.initialize(workspaceRoot=str(tmp))
        srv.enqueue({"text": "answer " * 40, "repeat": count + 100})
        sid = ""
        start: dict = {}
        samples: dict[int, float] = {}
        t0 = time.monotonic()
        for i in range(count):
            if i % 100 == 0:
                sid = d.call("session/create", {"title": f"soak {i}"})["session"]["id"]
                d.messages.clear()
                d.responses.clear()
            d.call("session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]})
            if i == 99:
                start = proc_stats(d.proc.pid)
            if i % 1000 == 999:
                # The curve tells growth that levels off (caches filling: 16 open sessions
                # of 100 turns each) from a leak (growth that goes on).
                samples[i + 1] = proc_stats(d.proc.pid)["rssMiB"]
        end = proc_stats(d.proc.pid)
        elapsed = time.monotonic() - t0
        d.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "turns": count,
        "seconds": round(elapsed, 1),
        "after100": start,
        "end": end,
        "rssMiBByTurn": samples,
        "rssGrowthPct": round(100 * (end["rssMiB"] - start["rssMiB"]) / start["rssMiB"], 1),
    }


def crash_loop(count: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="agentd-crash-"))
    (tmp / "a.txt").write_text("alpha\n")
    rng = random.Random(42)
    interrupted = 0
    with ScriptedModelServer() as srv:
        for i in range(count):
            d = Daemon(daemon_env(tmp, srv.base_url))
            d.initialize(workspaceRoot=str(tmp))
            sid = d.call("session/create", {"title": f"c{i}"})["session"]["id"]
            srv.reset()
            srv.enqueue(
                {
                    "toolCalls": [{"name": "read_file", "arguments": {"path": "a.txt"}}],
                    "delayMs": 2,
                },
                {"text": " ".join(f"w{j}" for j in range(200)), "delayMs": 2},
            )
            d.request_async(
                "session/chat", {"sessionId": sid, "parts": [{"type": "text", "text": "go"}]}
            )
            target = rng.randint(1, 60)
            d.wait_for(
                lambda t=target, d=d: len(d.notifications()) >= t or d.responses.get(4), timeout=30
            )
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            if i % 25 == 24 or i == count - 1:
                interrupted = check_storage(tmp, srv.base_url)["interrupted"]
    shutil.rmtree(tmp, ignore_errors=True)
    return {"kills": count, "interruptedClosed": interrupted, "violations": 0}


def abort_storm(count: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="agentd-storm-"))
    rng = random.Random(7)
    with ScriptedModelServer() as srv:
        d = Daemon(daemon_env(tmp, srv.base_url))
        d.initialize(workspaceRoot=str(tmp))
        sid = d.call("session/create", {"title": "storm"})["session"]["id"]
        srv.enqueue({"text": " ".join(["tok"] * 100), "delayMs": 1, "repeat": count + 10})
        before = proc_stats(d.proc.pid)
        latencies = []
        for i in range(count):
            chat = d.request_async(
                "session/chat",
                {"sessionId": sid, "onBusy": "queue", "parts": [{"type": "text", "text": "x"}]},
            )
            if rng.random() < 0.5:
                deadline = time.monotonic() + rng.random() * 0.05
                while time.monotonic() < deadline:
                    time.sleep(0.001)
            t = time.monotonic()
            d.call("session/abort", {"sessionId": sid})
            latencies.append((time.monotonic() - t) * 1000)
            d.response(chat, timeout=30)
            if i % 100 == 0:
                d.messages.clear()
                d.responses.clear()
        after = proc_stats(d.proc.pid)
        d.stop()
        counts = check_storage(tmp, srv.base_url)
    shutil.rmtree(tmp, ignore_errors=True)
    latencies.sort()
    return {
        "pairs": count,
        "before": before,
        "after": after,
        "messages": counts["messages"],
        "abortMedianMs": round(latencies[len(latencies) // 2], 2),
        "abortP99Ms": round(latencies[int(len(latencies) * 0.99)], 2),
    }


def mcp_limits(count: int) -> dict:
    """tests/reliability/test_mcp_limits.py with its storms at full size; its figures are
    the lines it prints (RSS peaks, mcp/status counts)."""
    test = ROOT / "tests" / "reliability" / "test_mcp_limits.py"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:xdist", str(test)],
        cwd=ROOT,
        env={**os.environ, "AGENTD_MCP_GROW_COUNT": str(count)},
        capture_output=True,
        text=True,
    )
    figures = [line for line in out.stdout.splitlines() if "RSS" in line]
    return {"passed": out.returncode == 0, "growCount": count, "figures": figures}
def framing(count: int) -> dict:
    """The framing fuzz of tests/test_framing.py and tests/reliability/test_fuzz.py,
    longer: `count` random streams through the parser, count/100 through a daemon."""
    base = random.randrange(1 << 32)
    start = time.monotonic()
    for seed in range(base, base + count):
        try:
            check_stream(seed)
        except AssertionError:
            print(
                f"framing: seed {seed} fails: python -c 'import sys; sys.path[:0] = "
                f'["tests"]; from test_framing import check_stream; check_stream({seed})\''
            )
            raise
    in_process_s = time.monotonic() - start

    tmp = Path(tempfile.mkdtemp(prefix="agentd-framing-"))
    limit = 200_000
    d = Daemon(daemon_env(tmp), args=["--max-frame-bytes", str(limit)])
    d.initialize()
    before = proc_stats(d.proc.pid)
    start = time.monotonic()
    daemon_cases = max(1, count // 100)
    for seed in range(base, base + daemon_cases):
        rng = random.Random(seed)
        data, markers, _, _ = framing_cases.stream(rng, limit)
        for chunk in framing_cases.splits(rng, data):
            d.send_raw(chunk)
        d.wait_for(lambda m=markers: all(x in d.responses for x in m), timeout=30)
        d.messages.clear()
        d.responses.clear()
    daemon_s = time.monotonic() - start
    after = proc_stats(d.proc.pid)
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "firstSeed": base,
        "inProcessCases": count,
        "inProcessSeconds": round(in_process_s, 1),
        "daemonCases": daemon_cases,
        "daemonSeconds": round(daemon_s, 1),
        "daemonBefore": before,
        "daemonAfter": after,
        "violations": 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["turns", "crash", "storm", "mcp", "framing"])
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    if args.what == "turns":
        result = soak_turns(args.count or 10_000)
    elif args.what == "crash":
        result = crash_loop(args.count or 500)
    elif args.what == "mcp":
        result = mcp_limits(args.count or 5_000)
    elif args.what == "framing":
        result = framing(args.count or 200_000)
    else:
        result = abort_storm(args.count or 1_000)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
