"""Project instructions: AGENTS.md files from the repository root down to the workspace,
the user's own, the configured ones, in the system prompt of every run (what the scripted
model received), in order, within their limits, read again at each run, and recorded on
the run's assistant message."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers import chat

FILE_LIMIT, TOTAL_LIMIT = 32 * 1024, 64 * 1024  # agentd.instructions


def system_prompts(model) -> list[str]:  # type: ignore[no-untyped-def]
    """The system prompt of each run's model request (title requests left out)."""
    out = []
    for request in model.requests():
        first = request["body"]["messages"][0]
        if first["role"] == "system" and "short title" not in first["content"]:
            out.append(first["content"])
    return out


def headings(prompt: str) -> list[str]:
    return re.findall(r"^## (.+)$", prompt, flags=re.M)


def repo(tmp_path: Path, git: str = "dir") -> dict[str, Path]:
    """tmp/outside/repo/a/b, the repository at repo (`.git` a directory or, as in a
    worktree, a file), AGENTS.md in repo, repo/a/b and outside (above the repository),
    none in repo/a; the user's file beside the configuration file."""
    outside = tmp_path / "outside"
    root = outside / "repo"
    leaf = root / "a" / "b"
    leaf.mkdir(parents=True)
    if git == "dir":
        (root / ".git").mkdir()
    else:
        (root / ".git").write_text("gitdir: /somewhere/else\n")
    (outside / "AGENTS.md").write_text("OUTSIDE the repository\n")
    (root / "AGENTS.md").write_text("ROOT: run make test\n")
    (leaf / "AGENTS.md").write_text("LEAF: this package uses tabs\n")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "AGENTS.md").write_text("USER: answer in French\n")
    return {"outside": outside, "root": root, "leaf": leaf, "conf": conf}


def config(tmp_path: Path, text: str = "") -> str:
    path = tmp_path / "conf" / "config.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("git", ["dir", "file"])
def test_nested_agents_files_reach_the_model_in_order(spawn, model, tmp_path, git):
    p = repo(tmp_path, git)
    docs = p["leaf"] / "docs"
    docs.mkdir()
    (docs / "b.md").write_text("EXTRA b\n")
    (docs / "a.md").write_text("EXTRA a\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / "style.md").write_text("HOME style\n")
    cfg = config(tmp_path, 'instructions = ["~/style.md", "docs/*.md"]\n')
    d = spawn(model.base_url, workspace=p["leaf"], AGENTD_CONFIG=cfg, HOME=str(home))
    sid = d.call("session/create", {})["session"]["id"]
    message = chat(d, sid, "hello")["message"]
    [prompt] = system_prompts(model)
    want = [
        p["conf"] / "AGENTS.md",
        home / "style.md",
        docs / "a.md",
        docs / "b.md",
        p["root"] / "AGENTS.md",
        p["leaf"] / "AGENTS.md",
    ]
    # Each under a heading naming its path, the most general first.
    assert headings(prompt) == [str(path) for path in want]
    order = [prompt.index(t) for t in ("USER", "HOME", "EXTRA a", "EXTRA b", "ROOT", "LEAF")]
    assert order == sorted(order)
    # agentd's own prompt comes first; nothing above the repository is read.
    assert prompt.startswith("You are a coding assistant")
    assert "OUTSIDE" not in prompt
    recorded = [(f["path"], f["size"], f["sent"]) for f in message["instructions"]]
    assert recorded == [(str(path), path.stat().st_size, path.stat().st_size) for path in want]
    # The editor sees them as the message forms, and in the history.
    updates = [
        n["params"]["message"]
        for n in d.notifications("message/updated")
        if n["params"]["message"]["id"] == message["id"]
    ]
    assert all(u["instructions"] == message["instructions"] for u in updates)
    [stored] = [
        m
        for m in d.call("session/messages", {"sessionId": sid})["messages"]
        if m["role"] == "assistant"
    ]
    assert stored["instructions"] == message["instructions"]


def test_outside_a_repository_only_the_workspace_file_is_read(spawn, model, tmp_path):
    p = repo(tmp_path)
    (p["root"] / ".git").rmdir()
    d = spawn(model.base_url, workspace=p["leaf"], AGENTD_CONFIG=config(tmp_path))
    sid = d.call("session/create", {})["session"]["id"]
    chat(d, sid, "hello")
    [prompt] = system_prompts(model)
    assert headings(prompt) == [str(p["conf"] / "AGENTS.md"), str(p["leaf"] / "AGENTS.md")]
    assert "ROOT" not in prompt and "OUTSIDE" not in prompt


def test_the_session_workspace_decides_and_no_files_means_no_section(spawn, model, tmp_path):
    """A session's own workspaceRoot is where the files are looked for; a workspace and
    a configuration directory without any send agentd's prompt alone, recording none."""
    p = repo(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    d = spawn(model.base_url, workspace=empty, AGENTD_CONFIG=str(empty / "config.toml"))
    bare = d.call("session/create", {})["session"]["id"]
    message = chat(d, bare, "hello")["message"]
    assert "instructions" not in message
    own = d.call("session/create", {"workspaceRoot": str(p["root"])})["session"]["id"]
    chat(d, own, "hello")
    first, second = system_prompts(model)
    assert "Project instructions" not in first
    assert headings(second) == [str(p["root"] / "AGENTS.md")]


def test_an_edit_applies_from_the_next_run(spawn, model, tmp_path):
    p = repo(tmp_path)
    d = spawn(model.base_url, workspace=p["leaf"], AGENTD_CONFIG=config(tmp_path))
    sid = d.call("session/create", {})["session"]["id"]
    first = chat(d, sid, "one")["message"]
    (p["leaf"] / "AGENTS.md").write_text("LEAF v2: spaces now, four of them\n")
    (p["root"] / "AGENTS.md").unlink()
    (p["root"] / "a" / "AGENTS.md").write_text("MID: new file in between\n")
    (p["conf"] / "AGENTS.md").write_text("")  # empty: left out
    second = chat(d, sid, "two")["message"]
    before, after = system_prompts(model)
    assert "LEAF: this package uses tabs" in before and "ROOT" in before
    assert "LEAF v2" in after and "tabs" not in after and "ROOT" not in after
    assert headings(after) == [str(p["root"] / "a" / "AGENTS.md"), str(p["leaf"] / "AGENTS.md")]
    assert [f["path"] for f in first["instructions"]][-1] == str(p["leaf"] / "AGENTS.md")
    assert first["instructions"][-1]["size"] == len("LEAF: this package uses tabs\n")
    assert second["instructions"][-1]["size"] == len("LEAF v2: spaces now, four of them\n")


def test_limits_cut_the_general_files_first_with_a_note(spawn, model, tmp_path):
    """32 KiB of a file, 64 KiB in all, the most specific first: the leaf (40 KiB) is cut
    to 32 KiB (a byte less: never inside a character), the root (30 KiB) fits, a
    configured file gets what is left, the user's file nothing; each cut says so."""
    p = repo(tmp_path)
    (p["leaf"] / "AGENTS.md").write_text("x" + "é" * (20 * 1024))  # 40 KiB + 1
    (p["root"] / "AGENTS.md").write_text("r" * (30 * 1024))
    (p["conf"] / "AGENTS.md").write_text("u" * (10 * 1024))
    (p["leaf"] / "extra.md").write_text("e" * 3072)
    d = spawn(
        model.base_url,
        workspace=p["leaf"],
        AGENTD_CONFIG=config(tmp_path, 'instructions = ["extra.md"]\n'),
    )
    sid = d.call("session/create", {})["session"]["id"]
    message = chat(d, sid, "hello")["message"]
    [prompt] = system_prompts(model)
    files = {f["path"]: (f["size"], f["sent"]) for f in message["instructions"]}
    leaf, root = str(p["leaf"] / "AGENTS.md"), str(p["root"] / "AGENTS.md")
    user, extra = str(p["conf"] / "AGENTS.md"), str(p["leaf"] / "extra.md")
    left = TOTAL_LIMIT - (FILE_LIMIT - 1) - 30 * 1024
    assert files == {
        user: (10 * 1024, 0),
        extra: (3072, left),
        root: (30 * 1024, 30 * 1024),
        leaf: (40 * 1024 + 1, FILE_LIMIT - 1),
    }
    assert list(files) == [user, extra, root, leaf]
    sections = dict(
        zip(headings(prompt), re.split(r"^## .+$", prompt, flags=re.M)[1:], strict=True)
    )
    assert "x" + "é" * (FILE_LIMIT // 2 - 1) + "\n" in sections[leaf]
    assert "\ufffd" not in prompt
    assert f"only the first {FILE_LIMIT - 1} of this file's 40961 bytes are sent" in sections[leaf]
    assert f"only the first {left} of this file's 3072 bytes are sent" in sections[extra]
    assert "e" * left in sections[extra] and "e" * (left + 1) not in sections[extra]
    assert "this file (10240 bytes) was left out" in sections[user]
    assert "u" not in sections[user].split("[agentd")[0]
    assert "cut" not in sections[root] and "left out" not in sections[root]


def test_hostile_files_are_skipped_and_never_block_a_run(spawn, model, tmp_path):
    """A FIFO named AGENTS.md (opening it for reading would wait for a writer), a
    directory, a symlink to a device, a symlink loop, a configured glob matching a FIFO,
    binary bytes: the runs go on, only the readable regular files are sent, and a file
    named twice is sent once, at its most specific place."""
    p = repo(tmp_path)
    os.mkfifo(p["root"] / "a" / "AGENTS.md")
    (p["conf"] / "AGENTS.md").unlink()
    (p["conf"] / "AGENTS.md").mkdir()
    os.symlink("/dev/zero", p["leaf"] / "zero.md")
    os.symlink(p["leaf"] / "loop.md", p["leaf"] / "loop.md")
    os.mkfifo(p["leaf"] / "pipe.md")
    (p["leaf"] / "notes.md").write_text("NOTES\n")
    (p["root"] / "AGENTS.md").write_bytes(b"ROOT \x00\xff\xfe binary\n")
    # The glob matches the leaf's AGENTS.md too, and the root's is named: each is sent
    # once, at its place as a directory's file.
    # And names no file can have: a NUL byte, an unclosed bracket, 5,000 characters.
    names = ["*.md", str(p["root"] / "AGENTS.md"), "nul\\u0000.md", "[oops", "n" * 5000]
    cfg = config(tmp_path, "instructions = [" + ", ".join(f'"{n}"' for n in names) + "]\n")
    d = spawn(model.base_url, workspace=p["leaf"], AGENTD_CONFIG=cfg)
    sid = d.call("session/create", {})["session"]["id"]
    # Nothing ever writes to the FIFOs: a read that waited would hang this chat.
    for text in ("one", "two"):
        message = chat(d, sid, text)["message"]
        assert message["finishReason"] == "stop"
    prompts = system_prompts(model)
    assert len(prompts) == 2
    want = [str(p["leaf"] / "notes.md"), str(p["root"] / "AGENTS.md"), str(p["leaf"] / "AGENTS.md")]
    for prompt in prompts:
        assert headings(prompt) == want
        assert "ROOT \x00\ufffd\ufffd binary" in prompt
    assert [f["path"] for f in message["instructions"]] == want
