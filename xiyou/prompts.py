"""Every system prompt a character is given is built here, in one of two modes.

- `meta`: the fine-tuned models. Their `meta_instruction`, exactly as trained (the same string as in the training
  data and the XTuner config), plus, when asked, the story so far and the room preamble.
- `persona`: any general chat model (Ollama, a hosted API, LMDeploy serving the base InternLM2): who he is (the
  character's `persona_prompt` without its question tail), how he speaks (his self-reference forms, the register
  his character file describes), the rules that keep a 7B-70B model in role (never step out of it, never speak
  for others), the room preamble in a group room, and up to 5 of his canon exchanges that best match the
  conversation, each with its chapter (at most `EXAMPLES_TOKEN_BUDGET` estimated tokens, xiyou.tokens;
  retrieval is xiyou.canon.rag's).
- both: a conversation set after chapter N gets the story so far and what he cannot know yet (xiyou.story's
  `story_context`, one copy), and canon examples from chapters up to N only. In persona mode the description is
  then who he is by chapter N (xiyou.story.stages: 悟空 at chapter 5 is 齐天大圣, not 唐僧's disciple), with how
  others address him then, and the name he goes by then (玄奘 before he is 唐三藏).

`build_messages(character, history, mode)` is what a page, the room, the CLI and the evaluation send;
`system_prompt` is its first message. A backend's mode travels with it (`mode_of(backend)`; the backend factory
sets it from the endpoint's `prompt` field). `describe(backend)` is the one-line "mode and model" a page shows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Literal, get_args

from xiyou.backends.base import Message, is_offline
from xiyou.character import Character

log = logging.getLogger(__name__)

PromptMode = Literal["meta", "persona"]
PROMPT_MODES: tuple[str, ...] = get_args(PromptMode)

#: Canon examples in a persona prompt: how many, and their estimated-token budget (header included).
EXAMPLES_K = 5
EXAMPLES_TOKEN_BUDGET = 1500

#: Sentences of a `meta_instruction` that speak of the model rather than the character (the fine-tuned models
#: were trained with them; a general model must not read them).
_OUT_OF_ROLE = re.compile(r"AI|ＡＩ|人工智能|书生·浦语|助手|模型")
_SENTENCE = re.compile(r"[^。！？]*[。！？]?")


def room_preamble(speaker: Character, present: Sequence[Character], person: str) -> str:
    """The group-room part of a system prompt: who is present, how lines are marked, speak only for yourself."""
    names = "、".join([f"{person}（来访的人）", *(c.name for c in present)])
    return (
        f"【群聊】此刻在座的有：{names}。大家一起说话，别人的每段话前都标着说话人的名字，如“{person}：……”。"
        f"你是{speaker.name}，每次只说{speaker.name}自己的一段话：不替别人说话，开头也不写自己的名字。"
    )


def speaking_register(character: Character, omit: Sequence[str] = (), name: str | None = None) -> str:
    """How he speaks, from his character file: the `meta_instruction`'s sentences about him (not those about an AI
    assistant, nor those holding a word of `omit`) and the role-play guidance of his `persona_prompt` (its tail,
    without "我的问题是："), calling him `name` when given."""
    about_him = [s for s in (m.group(0).strip() for m in _SENTENCE.finditer(character.meta_instruction)) if s]
    kept = [s for s in about_him if not _OUT_OF_ROLE.search(s) and not any(w in s for w in omit)]
    tail = character.persona_prompt[len(character.description) :]
    tail = re.sub(r"^\s*请你扮演\S*?(?:回答我的问题)?[，,]", "", tail)
    tail = re.sub(r"[，,]?\s*我的问题是[：:]?\s*$", "", tail).strip("，,。 ")
    if name:  # what he is called at that point of the story, in every sentence about him
        tail = tail.replace(character.name, name)
        kept = [s.replace(character.name, name) for s in kept]
    parts = ["".join(kept)] if kept else []
    if tail:
        parts.append(tail + "。")
    return "".join(parts)


def _persona_core(character: Character, chapter: int | None = None) -> str:
    """Who he is, how he speaks, the rules. With a chapter: who he is by then (xiyou.story.stages), how others
    address him then, and, before he has joined the pilgrimage, nothing of it."""
    stage, pilgrim = _stage(character, chapter)
    name = _name_at(character, chapter)
    refs = character.self_refs
    others = "、".join(f"“{r}”" for r in refs[1:])
    self_ref = f"自称多用“{refs[0]}”" + (f"（也说{others}）" if others else "") + "，"
    called = "、".join((stage.called if stage is not None and stage.called else character.forms_of_address)[:6])
    register = speaking_register(character, stage.omit if stage is not None else (), name)
    if chapter is None:
        opening = f"你就是{name}，《西游记》里的{name}，此刻正在取经路上。下面说的就是你自己。"
    elif pilgrim:
        opening = f"你就是{name}，《西游记》里的{name}，此刻正在取经路上。下面说的就是此刻的你自己。"
    else:
        opening = f"你就是{name}，《西游记》里的{name}。下面说的就是此刻的你自己。"
    others_line = "不替师父、师兄弟或任何旁人说话" if pilgrim else "不替任何旁人说话"
    return "\n\n".join(
        [
            opening,
            f"【你是谁】\n{stage.description if stage is not None else character.description}",
            "【你怎么说话】\n"
            f"{self_ref}别人称呼你{called}。{register}"
            "口气要像原著里的你：白话里夹些古白话，句子短，有脾气、有情绪；一次说一小段，不写长篇大论，不列清单。",
            "【规矩】\n"
            f"1. 你自始至终都是{name}。不说自己是人工智能、模型、助手或程序，不提“角色扮演”“设定”“提示”，"
            "不跳出角色解释什么。\n"
            f"2. 只说{name}自己的话：{others_line}，不写别人的台词，不写旁白，"
            "开头不写自己的名字。\n"
            "3. 遇到原著里没有的东西（现代的事物、外国的说法），用你那个世界的眼光去理解、去打趣，"
            "不要像百科一样讲解。\n"
            "4. 只用中文回答。",
        ]
    )


def _name_at(character: Character, chapter: int | None) -> str:
    """What the persona prompt calls him at `chapter`: his stage's name (玄奘 before he is 唐三藏), else his own."""
    stage, _pilgrim = _stage(character, chapter)
    return stage.name if stage is not None and stage.name else character.name


def _stage(character: Character, chapter: int | None) -> tuple[Any, bool]:
    """(his stage at `chapter` or None, whether he is on the pilgrimage by then)."""
    if chapter is None:
        return None, True
    from xiyou.names import CHARACTER_IDS
    from xiyou.story.membership import membership
    from xiyou.story.stages import stage_of

    if character.id not in CHARACTER_IDS:  # a character file of one's own: no stages, no membership
        return None, True
    return stage_of(character.id, chapter), membership(character.id, chapter).status == "pilgrim"


def _examples(
    character: Character,
    conversation: Sequence[Message],
    canon: Any,
    chapter: int | None,
    budget: int,
    prefer_chapters: range | None = None,
) -> str:
    if not any(m["role"] == "user" for m in conversation):
        return ""
    if canon is None:
        canon = _default_canon()
        if canon is None:
            return ""
    from xiyou.canon.rag import canon_examples

    kwargs: dict[str, Any] = {"k": EXAMPLES_K, "token_budget": budget}
    if chapter is not None:
        kwargs["max_chapter"] = chapter
    if prefer_chapters is not None:
        kwargs["prefer_chapters"] = prefer_chapters
    name = _name_at(character, chapter)
    if name != character.name:  # the examples are labelled with the name he goes by then
        character = character.model_copy(update={"name": name})
    return canon_examples(character, conversation, canon, **kwargs)


def _default_canon() -> Any:
    """The novel's canon (XIYOU_NOVEL), or None (then a persona prompt has no examples; said once in the log)."""
    try:
        from xiyou.canon import get_canon

        return get_canon()
    except (ImportError, OSError, ValueError) as e:
        log.warning("persona prompts go without canon examples: %s", e)
        return None


def system_prompt(
    character: Character,
    mode: PromptMode = "meta",
    *,
    conversation: Sequence[Message] = (),
    present: Sequence[Character] | None = None,
    person: str | None = None,
    canon: Any = None,
    chapter: int | None = None,
    story: str | None = None,
    prefer_chapters: range | None = None,
    examples_budget: int = EXAMPLES_TOKEN_BUDGET,
) -> str:
    """The system prompt of `character` in `mode` (see the module doc).

    - `conversation`: the messages so far (user/assistant); persona mode picks the canon examples that match it.
    - `present`, `person`: in a group room, who is there and the visitor's name (adds the room preamble).
    - `canon`: the Canon to take examples from (default: the novel's, when there is one).
    - `chapter`: the conversation is set after this chapter (1-100): the story so far and what he cannot know yet
      (xiyou.story.rooms.story_context) are added, and examples come from chapters up to it only.
    - `story`: more of the story (a scene, say), given to the character as it is.
    - `prefer_chapters`: a scene's chapters: persona mode's canon examples come from them first, then from the
      other chapters (up to `chapter`).
    """
    if mode not in PROMPT_MODES:
        raise ValueError(f"unknown prompt mode {mode!r}; use one of: {', '.join(PROMPT_MODES)}")
    if chapter is not None and not 1 <= chapter <= 100:
        raise ValueError(f"chapter must be within 1..100, got {chapter}")
    story_part = "\n".join(p for p in (_story_so_far(character, chapter), (story or "").strip()) if p)
    room_part = room_preamble(character, present, person or "施主") if present is not None else ""
    if mode == "meta":
        return "\n\n".join(p for p in (character.meta_instruction, story_part, room_part) if p)
    examples = _examples(character, conversation, canon, chapter, examples_budget, prefer_chapters)
    return "\n\n".join(p for p in (_persona_core(character, chapter), story_part, room_part, examples) if p)


def _story_so_far(character: Character, chapter: int | None) -> str:
    if chapter is None:
        return ""
    from xiyou.story.rooms import story_context

    return story_context(character.id, chapter)


def build_messages(
    character: Character, history: Sequence[Message], mode: PromptMode = "meta", **context: Any
) -> list[Message]:
    """The messages to send: the system prompt (`system_prompt(character, mode, **context)`) then `history`
    (user/assistant turns; a system message in it is replaced)."""
    turns: list[Message] = [{"role": m["role"], "content": m["content"]} for m in history if m["role"] != "system"]
    system = system_prompt(character, mode, conversation=turns, **context)
    return [{"role": "system", "content": system}, *turns]


def mode_of(backend: object) -> PromptMode:
    """The prompt mode a backend is to be prompted in: its `prompt_mode` attribute (set by the backend factory from
    the endpoint's `prompt`), else "meta"."""
    mode = getattr(backend, "prompt_mode", "meta")
    return mode if mode in PROMPT_MODES else "meta"


def describe(backend: object | None) -> str:
    """One line saying which mode and model a character is on, for a page caption or a member list (no secrets:
    backends' labels are redacted by the backends)."""
    if backend is None:
        return "无法说话 · unavailable"
    label = str(getattr(backend, "label", type(backend).__name__))
    if is_offline(backend):
        return f"原著台词 · canon lines from the novel ({label.split(':', 1)[-1].strip()})"
    if mode_of(backend) == "persona":
        return f"人设模式 · persona prompt on {label}"
    return f"微调模型 · fine-tuned (meta prompt) on {label}"
