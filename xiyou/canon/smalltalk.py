"""Small talk offline: what the person's words do when they ask nothing (a greeting, thanks, a goodbye, who are you?).

A visitor's first message is rarely a question about the book: it is `你好`, `大圣好呀`, `你是谁？`, and the last is
`谢谢，再见`. Matched against the novel as a question, these found lines that share a character or two
(`你们好！` → 八戒: `…只是下面还留孔儿，我们好出恭。`). Here they are recognised and answered with one of the
character's own lines that does the same thing in the novel (`施主，问讯了。`, `弟子乃东土大唐奉圣旨往西天拜活佛求真经
者。`): his `small_talk` table in his character file names them by exchange id, like his `book_questions`, so the
novel is read in place and the choice is a person's reading, not a pattern's.

How a clause is recognised (`_act_of_clause`), in order: without emoji, particles and forms of address, it is one
of the usual forms of an act (ACTS, matched whole); else it holds an act's words and little else (KEYWORDS, with
what may be left over: `_by_keywords`). English and net slang are read as Chinese first (`normalize`: thx → 谢谢).
A message is small talk when one clause is and the others ask nothing (`act_of`). A message that mixes small talk
with a question (`你好，你最怕什么？`) is a question: its small-talk clauses are left out of what is matched
(`act_of` returns the rest).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Sequence
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
            rf"|{_YOU}?的?(?:名字|姓名|大名)(?:是什么|叫什么|是啥)|{_YOU}?(?:该)?(?:怎么|如何)称呼{_YOU}?"
            r"|(?:请|能|可以)?(?:你|您)?(?:先|来)?(?:做个|来个|做一下|简单)?自我介绍(?:一下|下)?"
            rf"|(?:简单)?介绍(?:一下|下)?(?:你|您)?自己|{_YOU}?哪位|报(?:个|上)?名号|(?:讲讲|说说|聊聊)你是个?什么样的人"
            r"|(?:你|您)?(?:贵姓|尊姓大名|高姓大名|高姓|何方神圣)|报上名来|请问(?:你|您)是|who are you"
            r"|(?:跟我|给我|和我)?(?:说说|讲讲|聊聊|介绍介绍|介绍下)(?:你是谁|你自己|你的来历)",
        ),
        (
            "farewell",
            r"再见|再会|拜拜|拜|bye|bye ?bye|goodbye|see you|回见|回头见|下次见|下回见|明天见|改天见|下次再聊|下次聊"
            r"|改天再?聊|回头再?聊|告辞|告辞了|我?(?:先|要|得)?(?:走|撤|下线|下|去睡|睡|睡觉|去睡觉)了|先这样|先撤了?"
            r"|晚安|good ?night|后会有期|失陪|少陪|(?:你|您)?多?保重|我(?:要|得)走了"
            r"|(?:你|您)?(?:早点|早些|好好)?休息(?:去)?|早点睡|做个好梦|好梦",
        ),
        (
            "thanks",
            rf"(?:谢谢|多谢|感谢|谢了|谢啦|谢过|感恩|感激不尽|太感谢|非常感谢|万分感谢)(?:{_YOU})?(?:了|啦)?"
            r"|(?:谢谢|多谢|感谢|感恩)[^吗么呢？?]{1,10}|受教了?|thanks?|thank you|thx|辛苦(?:了|你了|您了)?|有劳了?"
            r"|麻烦(?:你|您)了|承蒙指教",
        ),
        (
            "apology",
            r"(?:对不起|抱歉|不好意思|sorry)[^吗么呢？?]{0,10}|打扰(?:了|一下|你了|您了)?|失礼了?|冒犯了?|得罪了?"
            r"|别生气了?|不要生气|莫生气|息怒",
        ),
        (
            "how_are_you",
            rf"{_YOU}?{_LATELY}?(?:还|过得|身体)?(?:好吗|好么|好不好|还好吗|还好吧|可好|安好)"
            rf"|{_YOU}{_LATELY}?(?:过得|身体|心情)?(?:怎么样|咋样|如何)|{_LATELY}(?:过得|身体|心情)?(?:怎么样|咋样|如何)"
            r"|(?:你|您)?(?:今天|一路|路上|这一路|最近)?(?:辛苦|累)(?:吗|么|不|了吧|吧)|累不累|辛不辛苦|心情(?:如何|怎么样|好吗)"
            r"|别来无恙|(?:你|您)?吃(?:了|饭了|过饭了|过了|饭)(?:吗|没|么|没有)|how are you|近来可好",
        ),
        (
            "compliment",
            r"(?:你|您)(?:人)?(?:真|好|太|很|超|挺|真是|可真|实在)?"
            r"(?:可爱|帅|好看|有趣|善良|聪明|厉害|了不起|棒|威风|伟大|英俊|潇洒|酷|牛)了?的?"
            r"|(?:真|好|太|很|超)?(?:厉害|了不起|威风|可爱|帅)了?|(?:你|您)?人(?:真|很|挺)?好|我是你的(?:粉丝|铁粉)"
            r"|我?(?:真|很|好|超|太|特别)?(?:佩服|崇拜|喜欢|爱)(?:你|您)了?的?",
        ),
        (
            "greeting",
            rf"{_YOU}好|早|早安|早上好|上午好|中午好|下午好|晚上好|哈喽|哈啰|哈罗|嗨|hi|hello|hey|halo|hiya|yo"
            r"|幸会|久仰(?:大名)?|初次见面(?:请多多?关照)?|请多关照|有礼了?|请了|好久不见|久违了?"
            r"|(?:贫僧|老孙|老猪|老沙|弟子|小僧|我|俺)?(?:问讯了?|稽首|作揖了?|唱喏了?|拜揖)"
            r"|阿弥陀佛|(?:你|您)?在吗|在不在|在么|有人吗|嘿|喂|哎|人呢?",
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
CALL = "call"  # a clause that only calls someone: no act by itself

#: Words that mark a clause as small talk when little else is in it (`_by_keywords`): 师父今天累不累呀,
#: 困死了 二师兄我下线啦, 唐僧你长得好俊啊. Same order as ACTS.
KEYWORDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (act, re.compile(pattern))
    for act, pattern in (
        (
            "who",
            r"自我介绍|介绍(?:一下|下)?(?:你|您)?自己|法号|名号|名字|称呼|叫什么|叫啥|尊姓|贵姓|报上名来|你是谁|何方神圣",
        ),
        (
            "farewell",
            r"再见|拜拜|回见|下线|晚安|告辞|先撤|溜了|去睡|睡了|睡觉|困了|困死了|好困|明天见|下次聊|改天聊|先走|走了"
            r"|后会有期|失陪|休息",
        ),
        ("thanks", r"谢谢|多谢|感谢|谢啦|谢了|受教|辛苦了|有劳|帮大忙|感恩"),
        ("apology", r"对不起|抱歉|不好意思|莫怪|别怪|见谅|别生气|别生我气|息怒|开玩笑|打扰|手滑|冒犯|得罪"),
        (
            "how_are_you",
            r"累不累|累吗|累了吧|累坏|累死|辛苦吗|心情|还好吗|没事吧|吃(?:了|过|饱)|吃.{0,2}了没|饭了|斋饭|睡得|睡好"
            r"|身体|饿不饿|饿吗|饿了|疼不疼|还?疼吗",
        ),
        (
            "compliment",
            r"粉丝|铁粉|喜欢你|爱你|崇拜|佩服|敬佩|慈悲|厉害|威武|帅|俊|可爱|萌|好暖|暖心|温柔|老实|靠谱|真逗|好逗|好玩"
            r"|有趣|了不起|棒|酷|yyds|万岁|最喜欢|最爱|爱了|看了.{0,3}遍",
        ),
        (
            "greeting",
            r"你好|您好|嗨|在吗|在不在|在么|在马|在线吗|人呢|出来|好久不见|久仰|幸会|失敬|早安|早上好|晚上好|下午好|有礼"
            r"|问讯",
        ),
    )
)
#: What is left of a clause once its small-talk words and forms of address are out may be only these.
_FILLER = re.compile(
    r"我们|你们|今天|今日|刚才|现在|最近|好像|一下|真的|假的|来着|一直|特别|敢问|请问|我|你|您|们|先|就|也|都|又|还|真|很|太|超"
    r"|了|的|得|啊|呀|呢|吧|啦|嘛|哦|哈|嘿|咯|呗|是|啥|看|长|好|没有|没|吗|么|不|可|香|才|那个|昨夜|昨晚|昨天|今早"
    r"|用过"
)
#: Characters of a clause's own that still let it be small talk by its keywords (default 3).
LEFTOVER_MAX = {"who": 0, "how_are_you": 1}
#: A question about something (not 怎么样, not 叫什么): never small talk by keywords.
_CONTENT_QUESTION = re.compile(r"什么|甚么|为什么|为啥|怎么(?!样)|哪|几|多少|谁|是不是|有没有|会不会|能不能|要不要")
#: How people type small talk in English or net slang, said the way the patterns read it.
_SLANG: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.I), said)
    for pattern, said in (
        (r"\bgood ?night\b|\bgn\b", "晚安"),
        (r"\bgood ?morning\b", "早上好"),
        (r"\bgood ?afternoon\b", "下午好"),
        (r"\bgood ?evening\b", "晚上好"),
        (r"\bthank you\b|\bthanks?\b|\bthx\b|\bty\b|蟹蟹|3q", "谢谢"),
        (r"\bsee you\b|\bbye ?bye\b|\bbye\b|\bcya\b|(?<!\d)88(?!\d)|(?<!\d)886(?!\d)|拜了", "再见"),
        (r"\bhow are you\b", "你好吗"),
        (r"\bwho are you\b", "你是谁"),
        (r"\bhi\b|\bhello\b|\bhey\b|\bhiya\b|\byo\b|\bhalo\b|哈喽|哈啰|哈罗", "你好"),
        (r"\bsorry\b", "对不起"),
        (r"\blol\b|(?<!\d)233+(?!\d)|(?<!\d)666+(?!\d)|\bhaha+\b", "哈哈"),
    )
)


def normalize(text: str) -> str:
    """`text` with English and net-slang small talk in Chinese (thx → 谢谢, 88 → 再见, good night → 晚安)."""
    for pattern, said in _SLANG:
        text = pattern.sub(said, text)
    return text


#: A clause that asks something: a question mark, a question word, a yes-no particle at its end.
_ASKS = re.compile(r"[?？]|什么|甚么|为什么|为啥|怎么|怎样|如何|哪|几|多少|谁|[吗么呢嘛][^\u4e00-\u9fff]*$")
_PIECE = re.compile(r"([^，,。.！!？?；;、…~～\s]+)([，,。.！!？?；;、…~～\s]*)")
_PARTICLES = re.compile(r"[啊呀呢吧哦嘛啦哈喔哟噢哇呐呗咯]+$")
#: Words that do nothing by themselves (all right, hm, haha): small talk beside an act, never an act alone.
_NEUTRAL = re.compile(r"好的?|好了|嗯+|哦+|噢+|ok|okay|行|明白了?|知道了|哈+|呵+|嘿{2,}|嘻+", re.I)
#: …and the same words opening a clause (好了我去睡了, 那谢谢啦, 请问法师怎么称呼).
_NEUTRAL_OPENING = re.compile(r"^(?:好了|好吧|好的|那么?|嗯+|哦+|ok|行吧|请问)(?=.)", re.I)
#: How the novel's small talk addresses people (老公公，贫僧问讯了。) and titles people give him (法师, 大师): a
#: clause of one of these only calls someone.
_ADDRESS = re.compile(
    r"老?(?:公公|施主|禅师|院主|先生|神仙|弟们?|哥哥?|大哥|二哥|兄弟们?|贤弟|长老|师父们?|师傅|法师|大师|列位|诸位|各位)"
)
_EMOJI = re.compile(r"[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]+")
#: 你是猪八戒吗: whether he is who the person thinks (`who`, with a name of the four).
_ARE_YOU = re.compile(r"^(?:请问)?(?:你|您)?(?:就|真|真的)?是(.+?)(?:本人|本猪|本尊)?(?:吗|么|吧|嘛)?$")


@functools.cache
def _vocative_set() -> frozenset[str]:
    from xiyou import names

    return frozenset(v.lower() for v in names.vocatives())


def _calls(text: str) -> bool:
    """Only calls someone: a name or form of address of the four, or one of the novel's (老公公, 法师), or the two
    together (御弟哥哥)."""
    return (
        text in _vocative_set()
        or bool(_ADDRESS.fullmatch(text))
        or any(text.startswith(v) and _ADDRESS.fullmatch(text[len(v) :]) for v in _vocative_set())
    )


def _bare(text: str) -> str:
    """Without particles at the end (你好呀 → 你好) and neutral words at the start (好了我去睡了 → 我去睡了)."""
    for _ in range(2):
        text = _NEUTRAL_OPENING.sub("", _PARTICLES.sub("", text)).strip() or text
    return text


def _unit(text: str) -> str:
    """One of a repeated word (在吗在吗, 久仰久仰, 嗨嗨 → 在吗, 久仰, 嗨)."""
    n = len(text)
    for k in (4, 3, 2):
        if n % k == 0 and text == text[: n // k] * k:
            return text[: n // k]
    return text


def _act_of_clause(clause: str, is_topic: Callable[[str], bool] | None = None) -> str | None:
    """The act of one clause; "" for one that does nothing by itself (嗯, 好的, an emoji), CALL for one that only
    calls someone (八戒, 御弟哥哥); None: not small talk. `is_topic`: see `act_of`."""
    from xiyou import names

    raw = _EMOJI.sub("", clause).strip().lower()
    text = _bare(raw)
    if not raw or _NEUTRAL.fullmatch(raw) or _NEUTRAL.fullmatch(_unit(text)):
        return ""
    if _calls(text):  # 八戒，你好 with 八戒 left in; 老公公，贫僧问讯了。 in a room; 御弟哥哥
        return CALL
    candidates, called = [text], []
    # a form of address glued on (师父好, 猴哥再见, 谢谢师父, 大圣你是谁, 晚上好呀二师兄): the act without it
    for name in (*names.vocatives(), "法师", "大师", "师傅"):
        low = name.lower()
        if text.startswith(low) and len(text) > len(low):
            rest = _bare(text[len(low) :])
            if rest == "好":  # 师父好 (a bare 好 is "all right", not a greeting)
                return "greeting"
            candidates.append(rest)
        if text.endswith(low) and len(text) > len(low):
            called.append(_bare(text[: -len(low)]))
    candidates += [_unit(c) for c in candidates]
    called += [_unit(c) for c in called]
    found = _ARE_YOU.match(candidates[0])
    if found and _calls(found.group(1)):
        return "who"  # 你是猪八戒吗
    for act, pattern in ACTS:
        if any(pattern.fullmatch(c) for c in candidates):
            return act
        # 谢谢师父, 再见八戒, 吃了吗师父; but in 你怎么称呼八戒 the name is what is asked about
        if act != "who" and any(pattern.fullmatch(c) for c in called):
            return act
    return _by_keywords(text, is_topic)


def _by_keywords(text: str, is_topic: Callable[[str], bool] | None = None) -> str | None:
    """The act of a clause that is its small-talk words and little else (师父今天累不累, 二师兄我下线,
    唐僧你长得好俊): once its keywords (of any act), forms of address and filler words are out, at most
    LEFTOVER_MAX characters are left. The first act of KEYWORDS found; None when the clause asks about something
    (什么, 为什么, 哪 …; 叫什么 and 怎么样 are small talk) or says more."""
    from xiyou import names

    found = [act for act, pattern in KEYWORDS if pattern.search(text)]
    if not found:
        return None
    for name in names.vocatives():  # one calling him at the start or the end (八戒你好萌啊, 晚安师父)
        low = name.lower()
        if text.startswith(low) or text.endswith(low):
            text = text.removeprefix(low) if text.startswith(low) else text.removesuffix(low)
            break
    if any(v.lower() in text for v in names.vocatives()):
        return None  # about someone else (你觉得师父好不好, 你怎么称呼八戒)
    rest = text
    for _, pattern in KEYWORDS:
        rest = pattern.sub("", rest)
    if _CONTENT_QUESTION.search(rest) or (is_topic is not None and is_topic(rest)):
        return None  # asks about something, or names the novel's things (妖怪出来了吗？)
    rest = _FILLER.sub("", _ADDRESS.sub("", rest))
    # who he is, how he is: nothing else may be named (你骑的马叫什么 asks the horse's name; 你挑担子累不累
    # asks about the load)
    return found[0] if len(rest) <= LEFTOVER_MAX.get(found[0], 3) else None


def act_of(query: str, is_topic: Callable[[str], bool] | None = None) -> tuple[str | None, str]:
    """(the act when `query` is small talk, else None; `query` without its small-talk clauses).

    `query` is the person's own words (`xiyou.names.strip_addressing` took out who they are said to). It is small
    talk when some clause is (`_act_of_clause`) and the others ask nothing: they do nothing by themselves (嗯, 好的,
    an emoji) or are a remark beside it (thx师父 听你说完好受多了) — no question, and nothing of the novel in them
    when `is_topic` (does this text name a person, place or thing of the novel?) is given. Otherwise the rest is a
    question, returned without the small-talk clauses (你好，你最怕什么？ → 你最怕什么？)."""
    acts: list[str] = []
    kept: list[str] = []
    called = asked = False  # some clause only calls someone; some clause is no small talk
    for m in _PIECE.finditer(normalize(query)):
        act = _act_of_clause(m.group(1), is_topic)
        called |= act == CALL
        asked |= act is None
        if act is None or act in ("", CALL):
            kept.append(m.group(0))
        else:
            acts.append(act)
    if not acts:
        if called and not asked:
            return "greeting", ""  # only calling him (御弟哥哥~): he answers as to a greeting
        return None, query
    rest = "".join(kept).strip()
    remark = not _ASKS.search(rest) and not (is_topic is not None and is_topic(rest))
    if not rest or remark or not asked:
        return min(acts, key=ACT_NAMES.index), ""
    return None, rest


def lines(canon: Canon, character: Character, act: str) -> list[Exchange]:
    """His lines for `act` as his character file lists them (ids this copy of the novel lacks are left out)."""
    from xiyou.canon import answers

    return answers.listed_exchanges(canon, character.id, getattr(character.small_talk, act))


def reply(
    canon: Canon, character: Character, act: str, exclude: Collection[str], max_chapter: int | None
) -> Exchange | None:
    """His first line for `act` (then for its FALLBACK acts) not yet said in the conversation and from a chapter a
    reader has reached; None when he has none left, and for a greeting when he has greeted already (greeted again,
    or greeted back in a room's banter, he moves on: one of his shrugs, `少题闲话，我们赶早儿去来。`)."""
    if act == "greeting" and any(ex.reply.text.strip() in exclude for ex in lines(canon, character, act)):
        return None
    from xiyou.canon import answers

    for name in (act, *FALLBACK.get(act, ())):
        found = answers.first_unsaid(lines(canon, character, name), exclude, max_chapter)
        if found is not None:
            return found
    return None


def listed(character: Character) -> Sequence[tuple[str, str]]:
    """(act, exchange id) of every line his character file lists, in order."""
    return [(act, i) for act in ACT_NAMES for i in getattr(character.small_talk, act)]
