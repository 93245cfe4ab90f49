"""Small talk offline: what the person's words do when they ask nothing (a greeting, thanks, a goodbye, who are you?).

A visitor's first message is rarely a question about the book: it is `你好`, `大圣好呀`, `你是谁？`, and the last is
`谢谢，再见`. Matched against the novel as a question, these found lines that share a character or two
(`你们好！` → 八戒: `…只是下面还留孔儿，我们好出恭。`). Here they are recognised (`act_of`: each clause of the
message, without forms of address and particles, is one of the acts below, or the message is not small talk) and
answered with one of the character's own lines that does the same thing in the novel (`施主，问讯了。`,
`贫僧乃东土大唐差往西天取经者。…`): his `small_talk` table in his character file names them by exchange id, like
his `book_questions`, so the novel is read in place and the choice is a person's reading, not a pattern's.

A message that mixes small talk with a question (`你好，你最怕什么？`) is a question: its small-talk clauses are
left out of what is matched (`act_of` returns the rest).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xiyou.canon.core import Canon
    from xiyou.canon.exchanges import Exchange
    from xiyou.character import Character

_YOU = r"(?:你|您|你们|您们|大家|各位|诸位|列位|大伙儿?)"
_LATELY = r"(?:最近|近来|这些天|这阵子|这几天|一向|今天|今日|这一向)"
#: What a clause of small talk does, and how people type it (the clause is matched whole, lower-cased, without its
#: particles and forms of address). A message of several acts is the first of them in this order (你好，你是谁？
#: asks who he is; 谢谢，再见 takes leave).
ACTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (act, re.compile(rf"(?:{pattern})", re.I))
    for act, pattern in (
        (
            "who",
            rf"{_YOU}?(?:是谁|是何人|是哪位|是什么人|是甚么人|谁啊?|叫什么|叫什么名字|叫甚么|叫啥|叫啥名字?)"
            rf"|{_YOU}?的?(?:名字|姓名|大名)(?:是什么|叫什么|是啥)|{_YOU}?(?:怎么|如何)称呼{_YOU}?"
            r"|(?:请|能|可以)?(?:你|您)?(?:先|来)?(?:做个|做一下|简单)?自我介绍(?:一下)?|介绍一下(?:你|您)?自己"
            r"|(?:你|您)?(?:贵姓|尊姓大名|高姓大名|高姓|何方神圣)|报上名来|请问(?:你|您)是|who are you",
        ),
        (
            "farewell",
            r"再见|再会|拜拜|拜|bye|bye ?bye|goodbye|see you|回见|回头见|下次见|下回见|明天见|改天见|下次再聊|下次聊"
            r"|改天再?聊|回头再?聊|告辞|告辞了|我(?:先|要|得)?(?:走|撤|下线|下|去睡)了|先这样|先撤了?|晚安|good ?night"
            r"|后会有期|失陪|少陪|(?:你|您)?多?保重|我(?:要|得)走了",
        ),
        (
            "thanks",
            rf"(?:谢谢|多谢|感谢|谢了|谢啦|谢过|感恩|感激不尽|太感谢|非常感谢|万分感谢|多谢多谢|谢谢谢谢)(?:{_YOU})?(?:了|啦)?"
            r"|thanks?|thank you|thx|辛苦(?:了|你了|您了|啦)|有劳了?|麻烦(?:你|您)了|承蒙指教",
        ),
        ("apology", r"对不起|抱歉|不好意思|打扰(?:了|一下)|sorry|失礼了?|冒犯了?|得罪了?"),
        (
            "how_are_you",
            rf"{_YOU}?{_LATELY}?(?:还|过得|身体)?(?:好吗|好么|好不好|还好吗|还好吧|可好|安好)"
            rf"|{_YOU}{_LATELY}?(?:过得|身体)?(?:怎么样|咋样|如何)|{_LATELY}(?:过得|身体)?(?:怎么样|咋样|如何)"
            r"|别来无恙|(?:你|您)?吃(?:了|饭了|过饭了|过了)(?:吗|没|么|没有)|how are you",
        ),
        (
            "compliment",
            r"(?:你|您)?(?:真|好|太|真是|可真|实在)?(?:厉害|了不起|棒|威风|伟大)了?"
            r"|我?(?:真|很|好|超|太)?(?:佩服|崇拜|喜欢)(?:你|您)了?",
        ),
        (
            "greeting",
            rf"{_YOU}好|早|早安|早上好|上午好|中午好|下午好|晚上好|哈喽|哈啰|哈罗|嗨|hi|hello|hey|halo|hiya"
            r"|幸会|久仰(?:大名)?|初次见面(?:请多多?关照)?|请多关照|有礼了?|请了"
            r"|(?:贫僧|老孙|老猪|老沙|弟子|小僧|我|俺)?(?:问讯了?|稽首|作揖了?|唱喏了?|拜揖)"
            r"|阿弥陀佛|在吗|在不在|有人吗",
        ),
    )
)
#: Acts with no line of his own borrow one of these, in order (then he shrugs it off, one of his deflections).
FALLBACK: dict[str, tuple[str, ...]] = {
    "how_are_you": ("greeting",),
    "compliment": ("thanks",),
    "apology": ("thanks",),
    "thanks": ("compliment",),
}
ACT_NAMES = tuple(act for act, _ in ACTS)
#: Acts that may end with whom they are said to (谢谢师父, 再见猴哥, 你好八戒).
CALLED_AFTER = frozenset({"farewell", "thanks", "apology", "greeting"})

_PIECE = re.compile(r"([^，,。.！!？?；;、…~～\s]+)([，,。.！!？?；;、…~～\s]*)")
_PARTICLES = re.compile(r"[啊呀呢吧哦嘛啦哈喔哟噢哇呐呗咯]+$")
#: Words that do nothing by themselves (all right, hm, haha): small talk beside an act, never an act alone.
_NEUTRAL = re.compile(r"好的?|嗯+|哦+|噢+|ok|okay|行|明白了?|知道了|哈+|呵+|嘿+|嘻+|喂", re.I)
#: How the novel's small talk addresses people (老公公，贫僧问讯了。): a clause of one of these only calls someone.
_ADDRESS = re.compile(
    r"老?(?:公公|施主|禅师|院主|先生|神仙|弟们?|哥哥?|大哥|二哥|兄弟们?|贤弟|长老|师父们?|列位|诸位|各位)"
)
_EMOJI = re.compile(r"[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]+")


@functools.cache
def _vocative_set() -> frozenset[str]:
    from xiyou import names

    return frozenset(v.lower() for v in names.vocatives())


def _act_of_clause(clause: str) -> str | None:
    """The act of one clause; "" for one that does nothing by itself (嗯, 好的, an emoji); None: not small talk."""
    from xiyou import names

    text = _PARTICLES.sub("", _EMOJI.sub("", clause).strip().lower()) or _EMOJI.sub("", clause).strip().lower()
    if not text or _NEUTRAL.fullmatch(text):
        return ""
    if text in _vocative_set() or _ADDRESS.fullmatch(text):  # a clause that only calls someone (八戒，你好; the
        return ""  # novel's 老公公，贫僧问讯了。 when another member's greeting is what he answers in a room)
    candidates, called = [text], []
    # a form of address glued on (师父好, 猴哥再见, 谢谢师父, 大圣你是谁): the act without it
    for name in names.vocatives():
        low = name.lower()
        if text.startswith(low) and len(text) > len(low):
            rest = text[len(low) :]
            if rest == "好":  # 师父好 (a bare 好 is "all right", not a greeting)
                return "greeting"
            candidates.append(rest)
        if text.endswith(low) and len(text) > len(low):
            called.append(text[: -len(low)])
    for act, pattern in ACTS:
        if any(pattern.fullmatch(c) for c in candidates):
            return act
        # 谢谢师父, 再见八戒; but in 你怎么称呼八戒 the name is what is asked about
        if act in CALLED_AFTER and any(pattern.fullmatch(c) for c in called):
            return act
    return None


def act_of(query: str) -> tuple[str | None, str]:
    """(the act when every clause of `query` is small talk, else None; `query` without its small-talk clauses).

    `query` is the person's own words (`xiyou.names.strip_addressing` took out who they are said to). Clauses that
    do nothing by themselves (嗯, 好的, an emoji) go with the rest; a query of them alone is no act."""
    acts: list[str] = []
    kept: list[str] = []
    for m in _PIECE.finditer(query):
        act = _act_of_clause(m.group(1))
        if act is None or act == "":
            kept.append(m.group(0))
        else:
            acts.append(act)
    if not acts:
        return None, query
    rest = "".join(kept).strip()
    if not rest or all(_act_of_clause(m.group(1)) == "" for m in _PIECE.finditer(rest)):
        return min(acts, key=ACT_NAMES.index), ""
    return None, rest


def lines(canon: Canon, character: Character, act: str) -> list[Exchange]:
    """His lines for `act` as his character file lists them (ids this copy of the novel lacks are left out)."""
    by_id = {ex.id: ex for ex in canon.exchanges(character.id)}
    return [by_id[i] for i in getattr(character.small_talk, act) if i in by_id]


def reply(
    canon: Canon, character: Character, act: str, exclude: Collection[str], max_chapter: int | None
) -> Exchange | None:
    """His first line for `act` (then for its FALLBACK acts) not yet said in the conversation and from a chapter a
    reader has reached; None when he has none left."""
    for name in (act, *FALLBACK.get(act, ())):
        for ex in lines(canon, character, name):
            if ex.reply.text.strip() not in exclude and (max_chapter is None or ex.chapter <= max_chapter):
                return ex
    return None


def listed(character: Character) -> Sequence[tuple[str, str]]:
    """(act, exchange id) of every line his character file lists, in order."""
    return [(act, i) for act in ACT_NAMES for i in getattr(character.small_talk, act)]
