"""`xiyou chat ID` (talk to one character in the terminal) and `xiyou prompt ID "question"` (the exact messages).

Both pick the backend as the apps do, plus the endpoints file: the character's table (or `[default]`) in
`--endpoints` / XIYOU_ENDPOINTS, else the persona shortcut (XIYOU_API_BASE_URL + XIYOU_API_MODEL), else
`--backend` / XIYOU_BACKEND. The messages are built by xiyou.prompts in the backend's mode (`--prompt` overrides).

The chat mirrors the app: the history is sent with every turn; a reply streams as it comes; a failed or empty
reply is reported (on stderr, never as the character's line) and the unanswered message is dropped, so it can
simply be sent again; Ctrl-C during a reply stops it (dropped too). `/clear` forgets the history, `/原文` (or
`/passage`) shows the novel just before the last line from the book, as the pages' 📖 does, `/exit` (or end of
input, Ctrl-D) ends the chat.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from pathlib import Path
from typing import TextIO

import click

from xiyou import env
from xiyou.backends.base import Backend, BackendError, Citation, GenerationSettings, Message, text_only
from xiyou.character import Character, CharacterError, get_character
from xiyou.prompts import PROMPT_MODES, PromptMode, build_messages, describe, mode_of

EXIT = ("/exit", "/quit")
CLEAR = "/clear"
PASSAGE = ("/原文", "/passage")
HELP = "/help"
COMMANDS = "/clear 清空对话 · /原文 上一句的原著出处 · /exit 结束"


def _character(character_id: str) -> Character:
    try:
        return get_character(character_id)
    except CharacterError as e:
        raise click.BadParameter(str(e), param_hint="ID") from None


def _endpoint(character: Character, endpoints: str | None):
    from xiyou.endpoints import configured_endpoints

    try:
        return configured_endpoints(Path(endpoints).expanduser() if endpoints else None).get(character.id)
    except ValueError as e:  # EndpointError: the file or the shortcut is broken
        raise click.ClickException(str(e)) from None


def _chosen_endpoint(character: Character, kind: str | None, endpoints: str | None):
    """The endpoint to use: the character's (file or shortcut) unless `--backend` asks for another kind."""
    endpoint = _endpoint(character, endpoints)
    if endpoint is not None and kind is not None and endpoint.backend != kind:
        return None
    return endpoint


def _backend(character: Character, kind: str | None, endpoints: str | None) -> Backend:
    from xiyou.backends.factory import make_backend

    endpoint = _chosen_endpoint(character, kind, endpoints)
    try:
        return make_backend(character, kind=kind, endpoint=endpoint)
    except BackendError as e:
        raise click.ClickException(
            f"{character.name} cannot speak: {e}{_offline_hint(character, kind, endpoint)}"
        ) from None


def _offline_hint(character: Character, kind: str | None, endpoint) -> str:
    """The apps' offer of the offline mode, as a command: when his model (or server) cannot be had and the novel
    is here; nothing when the offline mode is what failed."""
    try:
        failed = kind or (endpoint.backend if endpoint is not None else env.backend_kind())
    except ValueError:  # a bad XIYOU_BACKEND: the error says so
        return ""
    if not env.offline_offer(failed):
        return ""
    return f"\nNo model at hand? Talk with his lines from the book: xiyou chat {character.id} --backend canon"


def _mode(character: Character, kind: str | None, endpoints: str | None, override: str | None) -> PromptMode:
    """The prompt mode the chat would use, without building the backend (local weights are slow to load)."""
    if override:
        return override  # type: ignore[return-value]
    endpoint = _chosen_endpoint(character, kind, endpoints)
    return endpoint.prompt if endpoint is not None and endpoint.backend != "canon" else "meta"


def _check_in_story(character: Character, chapter: int | None) -> None:
    """UsageError when the story has not brought `character` in by `chapter` (xiyou.story.membership): says from
    which chapter he can be asked."""
    if chapter is None:
        return
    from xiyou.story import MembershipError, check_members

    try:
        check_members([character.id], chapter)
    except MembershipError as e:
        raise click.UsageError(str(e)) from None


def _context(chapter: int | None) -> dict[str, object]:
    return {"chapter": chapter} if chapter is not None else {}


_backend_option = click.option(
    "--backend",
    "kind",
    type=click.Choice(env.BACKEND_KINDS),
    default=None,
    help="Force a backend kind (default: the endpoints file / persona shortcut, else XIYOU_BACKEND).",
)
_endpoints_option = click.option(
    "--endpoints",
    type=click.Path(dir_okay=False),
    help="Endpoints file (TOML); default $XIYOU_ENDPOINTS.",
)
_prompt_option = click.option(
    "--prompt",
    "prompt_mode",
    type=click.Choice(PROMPT_MODES),
    default=None,
    help="Prompt mode: meta (the fine-tuned models' meta_instruction) or persona (any chat model). "
    "Default: the endpoint's `prompt`, else meta.",
)
_chapter_option = click.option(
    "--chapter",
    type=click.IntRange(1, 100),
    default=None,
    help="Set the conversation after this chapter: who he is by then, the story so far, canon examples only from "
    "chapters up to it.",
)


@click.command("prompt")
@click.argument("character_id", metavar="ID")
@click.argument("question")
@_backend_option
@_endpoints_option
@_prompt_option
@_chapter_option
@click.option("--json", "as_json", is_flag=True, help="Print the messages as one JSON array.")
def prompt_cmd(
    character_id: str,
    question: str,
    kind: str | None,
    endpoints: str | None,
    prompt_mode: str | None,
    chapter: int | None,
    as_json: bool,
) -> None:
    """Show the exact messages that would be sent to ID for QUESTION (no model is asked)."""
    character = _character(character_id)
    _check_in_story(character, chapter)
    mode = _mode(character, kind, endpoints, prompt_mode)
    messages = build_messages(character, [{"role": "user", "content": question}], mode, **_context(chapter))
    if as_json:
        sys.stdout.write(json.dumps(messages, ensure_ascii=False, indent=2) + "\n")
        return
    click.echo(f"# {character.name} · prompt mode: {mode}", err=True)
    for m in messages:
        sys.stdout.write(f"── {m['role']} ──\n{m['content']}\n\n")


def _safe(text: str) -> str:
    """Text a terminal can take (a lone surrogate from a broken server must not end the chat)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def chat_loop(
    character: Character,
    backend: Backend,
    mode: PromptMode,
    settings: GenerationSettings,
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    context: dict[str, object] | None = None,
) -> list[Message]:
    """Run the chat until /exit or end of input; returns the history. Separate from the command for tests."""
    history: list[Message] = []
    interactive = stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and ↑ history for input())
    stderr.write(f"{character.emoji} {character.name} · {describe(backend)}\n")
    stderr.write(f"{COMMANDS} · Ctrl-C 打断回答\n{character.name}：{character.greeting}\n")
    cited: tuple[str, Citation] | None = None  # the last reply from the book, for /原文
    while True:
        if interactive:
            stderr.write("你：")
            stderr.flush()
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            break
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in EXIT:
            break
        if text == CLEAR:
            history.clear()
            cited = None
            stderr.write("（对话已清空）\n")
            continue
        if text == HELP:
            stderr.write(f"{COMMANDS}\n")
            continue
        if text in PASSAGE:
            _show_passage(cited, character.id, stdout, stderr)
            continue
        history.append({"role": "user", "content": text})
        messages = build_messages(character, history, mode, **(context or {}))
        reply, error, citation = _reply(character, backend, messages, settings, stdout)
        if reply.strip() and error is None:
            history.append({"role": "assistant", "content": reply})
            cited = (reply, citation) if citation is not None else None
            continue
        history.pop()  # unanswered: the person can simply send it again
        if error:
            stderr.write(f"{character.name} 没能回答（消息未保存，可以重新发送）：{_safe(error)}\n")
        else:
            stderr.write(f"{character.name} 这次什么也没说（消息未保存，可以重新发送）。\n")
    return history


def _show_passage(cited: tuple[str, Citation] | None, speaker: str, out: TextIO, err: TextIO) -> None:
    """/原文: the novel just before the last line from the book (xiyou.canon.passage_of), or why there is none."""
    from xiyou.canon import passage_of

    found = passage_of(cited[1].chapter, cited[0], speaker) if cited is not None else None
    if found is None:
        err.write("（上一句没有可以指出的原著出处 · the last reply has no passage in the novel to show）\n")
        return
    lead, line = found
    out.write(f"《西游记》{cited[1].label()}\n{lead}【{line}】\n")
    out.flush()


def _reply(
    character: Character, backend: Backend, messages: list[Message], settings: GenerationSettings, out: TextIO
) -> tuple[str, str | None, Citation | None]:
    """Stream one reply to `out`; returns (text, error or None, its citation or None)."""
    cited: list[Citation] = []
    cancel = threading.Event()
    text = ""
    started = False
    try:
        for delta in text_only(backend.stream(messages, settings, cancel), cited.append):
            if not started:
                out.write(f"{character.name}：")
                started = True
            text += delta
            out.write(_safe(delta))
            out.flush()
    except BackendError as e:
        if started:
            out.write("\n")
        return text, str(e), None
    except KeyboardInterrupt:
        cancel.set()
        out.write("\n" if started else "")
        return "", "打断了（Ctrl-C）", None
    if started:
        if cited:
            out.write(f"\n（📖 《西游记》{cited[-1].label()}）")
        out.write("\n")
        out.flush()
    return text, None, (cited[-1] if cited else None)


@click.command("chat")
@click.argument("character_id", metavar="ID")
@_backend_option
@_endpoints_option
@_prompt_option
@_chapter_option
@click.option("--temperature", type=click.FloatRange(0.0, 2.0), default=None, help="Default: the character's.")
@click.option("--max-new-tokens", type=click.IntRange(1, 32768), default=None, help="Default: the character's.")
def chat_cmd(
    character_id: str,
    kind: str | None,
    endpoints: str | None,
    prompt_mode: str | None,
    chapter: int | None,
    temperature: float | None,
    max_new_tokens: int | None,
) -> None:
    """Talk with one character in the terminal, on any backend (history, streaming; /clear, /exit)."""
    character = _character(character_id)
    _check_in_story(character, chapter)
    backend = _backend(character, kind, endpoints)
    if chapter is not None and hasattr(backend, "max_chapter"):
        backend.max_chapter = chapter  # a canon backend: lines from chapters up to it only
    mode: PromptMode = prompt_mode or mode_of(backend)  # type: ignore[assignment]
    overrides = {k: v for k, v in (("temperature", temperature), ("max_new_tokens", max_new_tokens)) if v is not None}
    settings = GenerationSettings.for_character(character, **overrides)
    chat_loop(character, backend, mode, settings, sys.stdin, sys.stdout, sys.stderr, _context(chapter))
