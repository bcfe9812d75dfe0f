"""Hostile MCP servers at full size: a 200 MB tool result and 5,000 tools/list_changed
notifications, with the daemon's memory sampled throughout (psutil). The quick
versions are in tests/test_mcp_hostile.py."""

from __future__ import annotations

import os
import threading

import psutil
import pytest
from helpers import CTX_TOOLS, chat, ctx_server, new_session, tool_parts, write_config
from test_mcp_hostile import hostile, too_large

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]

SCALE = float(os.environ.get("AGENTD_RELIABILITY_SCALE", "1"))
MiB = 1024 * 1024
# Storms that add a tool with each notification relist ever longer lists: 500 here,
# 5,000 in `bench/soak.py mcp` (AGENTD_MCP_GROW_COUNT).
GROW_COUNT = int(os.environ.get("AGENTD_MCP_GROW_COUNT", "500"))


def chat_long(d, sid: str, text: str, timeout: float, **extra: object) -> dict:  # type: ignore[no-untyped-def]
    params = {"sessionId": sid, "parts": [{"type": "text", "text": text}], **extra}
    return d.call("session/chat", params, timeout=timeout)


class PeakRss:
    """The highest RSS of a process while the block runs, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.start = self.peak = self.proc.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / MiB


def test_a_200_mb_result_is_dropped_without_being_held(spawn, model, tmp_path):
    size = int(200 * MiB * SCALE)
    d = spawn(model.base_url, **write_config(tmp_path, {"h": hostile()}))
    sid = new_session(d, title="t")
    d.call("mcp/list", {"connect": True}, timeout=30)
    chat(d, sid, "warm up", tools=["h_*"])
    cases = [("first", True), ("last", True), ("middle", True), ("first", False)]
    for where, end in cases:
        model.enqueue(
            {
                "toolCalls": [
                    {"name": "h_big", "arguments": {"bytes": size, "id": where, "end": end}}
                ]
            },
            {"text": "ok"},
        )
        with PeakRss(d.proc.pid) as rss:
            [part] = tool_parts(chat_long(d, sid, f"big {where}", 60, tools=["h_*"])["message"])
        assert too_large(part, "h", "big"), part["state"]
        print(f"200 MB result, id {where}, end {end}: RSS +{rss.growth_mib:.1f} MiB")
        assert rss.growth_mib < 32, (where, end, rss.growth_mib)
        if not end:
            break  # the server stalls on the endless line
        model.enqueue(
            {"toolCalls": [{"name": "h_echo", "arguments": {"text": "ok"}}]}, {"text": "k"}
        )
        [echo] = tool_parts(chat(d, sid, "echo", tools=["h_*"])["message"])
        assert echo["state"]["output"] == "ok"


def test_results_just_under_the_limit_are_read_and_cut(spawn, model, tmp_path):
    """A 16 MiB result is parsed (in a thread), cut to 50 KB for the model, and saved
    whole. Its copies (the line, the parsed text, the saved bytes) are transient: the
    peak is a few times the result, and a few seconds after six results in a row the
    daemon has given the memory back (glibc would keep it in the arenas of the threads
    that parsed and saved them: 236 to 284 MiB instead of about 150 here)."""
    size = 16 * MiB - 4096
    d = spawn(model.base_url, **write_config(tmp_path, {"h": hostile()}))
    sid = new_session(d, title="t")
    d.call("mcp/list", {"connect": True}, timeout=30)
    chat(d, sid, "warm up", tools=["h_*"])
    proc = psutil.Process(d.proc.pid)
    start = proc.memory_info().rss / MiB
    for _ in range(6):
        model.enqueue(
            {"toolCalls": [{"name": "h_big", "arguments": {"bytes": size}}]}, {"text": "ok"}
        )
        with PeakRss(d.proc.pid) as rss:
            [part] = tool_parts(chat_long(d, sid, "big", 60, tools=["h_*"])["message"])
        assert part["state"]["status"] == "completed"
        assert len(part["state"]["output"].encode()) <= 50_000
        print(f"16 MiB result: RSS +{rss.growth_mib:.1f} MiB at the peak")
        assert rss.growth_mib < 128, rss.growth_mib
    after = proc.memory_info().rss / MiB
    d.wait_for(lambda: proc.memory_info().rss / MiB < start + 72, timeout=15)
    released = proc.memory_info().rss / MiB
    print(f"RSS {start:.1f} MiB before, {after:.1f} after six, {released:.1f} once released")


def test_a_storm_of_5000_tools_list_changed(spawn, model, tmp_path):
    """5,000 notifications that change nothing: no mcp/status, no memory. 500 (5,000
    in `bench/soak.py mcp`) that each add a tool: a few dozen relistings (one at a
    time, at most every 0.5 s), the last one complete; then more storms over those
    tools cost nothing more (what a storm costs is holding the tools)."""
    count = int(5000 * SCALE)
    grow = int(GROW_COUNT * SCALE)
    d = spawn(model.base_url, **write_config(tmp_path, {"ctx": ctx_server(timeout=120)}))
    sid = new_session(d, title="t")
    d.call("mcp/list", {"connect": True}, timeout=30)
    chat(d, sid, "warm up")

    def storm(count: int, grow: bool) -> tuple[list[dict], PeakRss]:
        before = len(d.notifications("mcp/status"))
        model.enqueue(
            {"toolCalls": [{"name": "ctx_storm", "arguments": {"count": count, "grow": grow}}]},
            {"toolCalls": [{"name": "ctx_echo", "arguments": {"text": "after"}}]},
            {"text": "ok"},
        )
        with PeakRss(d.proc.pid) as rss:
            first, after = tool_parts(chat_long(d, sid, "storm", 180)["message"])
            assert first["state"]["output"] == f"{count} notifications sent"
            assert after["state"]["output"] == "after"
            if grow:
                d.wait_for(
                    lambda: any(
                        n["params"]["server"].get("toolCount") == CTX_TOOLS + count
                        for n in d.notifications("mcp/status")
                    ),
                    timeout=120,
                )
        statuses = d.notifications("mcp/status")[before:]
        print(
            f"{count} notifications (grow={grow}): {len(statuses)} mcp/status, RSS +{rss.growth_mib:.1f} MiB"
        )
        return statuses, rss

    quiet, rss = storm(count, grow=False)
    assert quiet == [] and rss.growth_mib < 16, rss.growth_mib
    grown, rss = storm(grow, grow=True)
    assert 1 <= len(grown) <= 60 and grown[-1]["params"]["server"]["toolCount"] == CTX_TOOLS + grow
    assert rss.growth_mib < 160, rss.growth_mib
    # A relisting holds the old and the new list a moment (about 10 MiB each here), and
    # that is all: RSS does not climb from one storm to the next.
    settled = []
    for _ in range(3):
        again, rss = storm(1000, grow=False)
        assert again == [] and rss.growth_mib < 32, rss.growth_mib
        settled.append(psutil.Process(d.proc.pid).memory_info().rss / MiB)
    print("RSS after each storm of 1,000:", [f"{r:.1f}" for r in settled])
    assert settled[-1] - settled[0] < 16, settled
