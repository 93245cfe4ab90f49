"""`xiyou chat ID`: a terminal chat with one character, through a stdin pipe and through a pseudo-terminal, on a
scripted OpenAI-compatible server (so every request it sent can be read back) and offline on the canon."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scripted_openai import Fault, ScriptedOpenAI

from xiyou.character import load_characters

C = load_characters()
XIYOU = [sys.executable, "-m", "xiyou.cli"]


def numbered(request) -> str:
    """The reply says how many turns it was sent (history included)."""
    return f"老孙听见{len(request.messages) - 1}句。"


def chat_env(server: ScriptedOpenAI, novel_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XIYOU_ENDPOINTS", "XIYOU_BACKEND", "OPENAI_API_KEY")}
    return {**env, "XIYOU_API_BASE_URL": server.base_url, "XIYOU_API_MODEL": "general", "XIYOU_NOVEL": str(novel_path),
            **extra}  # fmt: skip


def test_chat_through_a_pipe_keeps_history_clears_and_drops_failed_turns(novel_path: Path) -> None:
    with ScriptedOpenAI(reply=numbered, chunk_chars=2) as server:
        server.queue_faults(None, None, Fault.server_error(400))  # the third request is refused (no retry)
        stdin = "大圣好\n你的棒子呢？\n这句会失败\n/clear\n\n重新来\n/exit\n不会发送\n"
        proc = subprocess.run(
            [*XIYOU, "chat", "wukong"], input=stdin, env=chat_env(server, novel_path),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        sent = [[m["content"] for m in r.messages[1:]] for r in server.chat_requests()]
        systems = {r.messages[0]["content"] for r in server.chat_requests()}
    assert proc.returncode == 0, proc.stderr
    assert sent == [
        ["大圣好"],
        ["大圣好", "老孙听见1句。", "你的棒子呢？"],  # the history goes with every turn
        ["大圣好", "老孙听见1句。", "你的棒子呢？", "老孙听见3句。", "这句会失败"],
        ["重新来"],  # /clear forgot everything; the failed turn was never kept; /exit ended before the last line
    ]
    assert proc.stdout == "孙悟空：老孙听见1句。\n孙悟空：老孙听见3句。\n孙悟空：老孙听见1句。\n"
    # errors go to stderr, said plainly, never as the character's line
    assert "孙悟空 没能回答（消息未保存，可以重新发送）" in proc.stderr and "HTTP 400" in proc.stderr
    assert "（对话已清空）" in proc.stderr and "人设模式 · persona prompt" in proc.stderr
    assert all(s.startswith("你就是孙悟空") for s in systems)  # persona mode from the shortcut


def test_chat_offline_on_the_canon_cites_the_chapter(novel_path: Path) -> None:
    env = {**os.environ, "XIYOU_NOVEL": str(novel_path)}
    proc = subprocess.run(
        [*XIYOU, "chat", "bajie", "--backend", "canon"], input="二师兄，吃了吗？\n", env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"猪八戒：.+\n（📖 《西游记》第[一二三四五六七八九十百]+回.*）\n", proc.stdout, re.S)
    assert "原著台词" in proc.stderr


def test_chat_offline_shows_the_passage_of_the_last_line(novel_path: Path) -> None:
    """/原文 prints the novel just before his last line, as the pages' 📖 does; before any line from the book, and
    after a /clear, it says there is none."""
    env = {**os.environ, "XIYOU_NOVEL": str(novel_path)}
    stdin = "/原文\n你为什么被贬下界？\n/原文\n/clear\n/passage\n"
    proc = subprocess.run(
        [*XIYOU, "chat", "wujing", "--backend", "canon"], input=stdin, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    reply, cite, heading, *passage_lines = proc.stdout.splitlines()
    passage = "\n".join(passage_lines)  # the novel's own paragraphs
    line = reply.removeprefix("沙悟净：")
    assert cite == "（📖 《西游记》第八回 · 对菩萨说）" and heading == "《西游记》第八回 · 对菩萨说"
    assert passage.endswith(f"【{line}】") and len(passage) > len(line) + 60  # the paragraph leading to his line
    assert proc.stderr.count("没有可以指出的原著出处") == 2  # before the first line, and after /clear


def test_chat_refuses_an_unknown_character_and_a_broken_shortcut() -> None:
    proc = subprocess.run([*XIYOU, "chat", "sunwukong"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown character 'sunwukong'" in proc.stderr
    env = {**os.environ, "XIYOU_API_BASE_URL": "http://127.0.0.1:9/v1"}
    env.pop("XIYOU_API_MODEL", None)
    env.pop("XIYOU_ENDPOINTS", None)
    proc = subprocess.run([*XIYOU, "chat", "wukong"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "set XIYOU_API_MODEL" in proc.stderr and "Traceback" not in proc.stderr


def test_without_a_model_the_error_offers_his_lines_from_the_book(novel_path: Path, tmp_path: Path) -> None:
    """As the app's button does: a local user with no model (here: no server configured) is told the command that
    talks with him offline, and the command works. No offer without the novel, or when the offline mode is what
    failed (a file that is not the novel)."""
    unset = ("XIYOU_ENDPOINTS", "XIYOU_API_BASE_URL", "XIYOU_API_MODEL", "OPENAI_BASE_URL", "XIYOU_BACKEND")
    base = {**{k: v for k, v in os.environ.items() if k not in unset}, "XIYOU_CANON_CPS": "0"}
    offer = "Talk with his lines from the book: xiyou chat wukong --backend canon"
    not_the_novel = tmp_path / "notes.txt"
    not_the_novel.write_text("购物清单：米、面、油。\n", encoding="utf-8")

    def chat(kind: str, novel: Path, said: str = "") -> subprocess.CompletedProcess[str]:
        env = {**base, "XIYOU_NOVEL": str(novel)}
        argv = [*XIYOU, "chat", "wukong", "--backend", kind]
        return subprocess.run(argv, input=said, capture_output=True, text=True, timeout=120, env=env)

    proc = chat("openai", novel_path)
    assert proc.returncode == 1 and "no OpenAI-compatible server is configured" in proc.stderr, proc.stderr
    assert offer in proc.stderr and "Traceback" not in proc.stderr
    taken = chat("canon", novel_path, "你的金箍棒是从哪里得来的？\n")
    assert taken.returncode == 0 and "龙宫" in taken.stdout, taken.stdout + taken.stderr
    for kind, novel in (("openai", tmp_path / "absent.txt"), ("canon", not_the_novel)):
        proc = chat(kind, novel)
        assert proc.returncode == 1 and "cannot speak" in proc.stderr and offer not in proc.stderr, proc.stderr


def _read_until(fd: int, pattern: str, timeout: float = 60.0) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if re.search(pattern, seen.decode("utf-8", "replace"), re.S):
                return seen.decode("utf-8", "replace")
    raise AssertionError(f"never saw {pattern!r}; the terminal showed:\n{seen.decode('utf-8', 'replace')}")


@pytest.mark.slow
def test_chat_in_a_terminal_prompts_streams_and_ends_on_ctrl_d(novel_path: Path) -> None:
    with ScriptedOpenAI(reply=numbered, chunk_chars=1, chunk_delay=0.02) as server:
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [*XIYOU, "chat", "wukong"], env=chat_env(server, novel_path, TERM="dumb"),
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        try:
            _read_until(master, "你：")  # an interactive terminal gets a prompt
            os.write(master, "大圣好\n".encode())
            shown = _read_until(master, "老孙听见1句。.*你：")
            assert "孙悟空：老孙听见1句。" in shown
            os.write(master, b"\x04")  # Ctrl-D: end of input ends the chat
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
        assert len(server.chat_requests()) == 1
