"""Attributed dialogue: every quoted utterance of the novel with its speaker, found by rules, precision first.

Most speech in 西游记 is introduced by narration ending in a speech verb and a colon (`行者笑道：“…”`,
`那呆子慌了，道：“…”`, `三藏闻言，大惊道：“…”`). The speaker is the subject of that narration: the name at the
start of the clause that holds the verb, or, when that clause has no subject of its own (`大惊道`), of an earlier
clause of the same sentence. Names resolve through the characters' aliases to the four ids; other people keep
the name the narration gives them (观音, 老者, 那怪 → 怪); everything unsure is "unknown".
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable

from xiyou.canon.loader import Chapter, Novel
from xiyou.canon.quotes import Quote, find_quotes
from xiyou.names import CHARACTER_IDS, names_him_in, narration_names, unnamed_scenes, unnamed_speaker_names

UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class Utterance:
    chapter: int
    offset: int  # offset of the opening “ in the chapter text
    speaker: str  # a character id, another named speaker ("观音", "老者"), or "unknown"
    text: str  # the words, without the outer quotes
    name: str = ""  # the name the narration used for the speaker ("行者", "那呆子" -> "呆子"); "" when unknown
    end: int = 0  # offset just past the closing quote

    @property
    def id(self) -> str:
        """Stable id from chapter and offset: c027-012345."""
        return f"c{self.chapter:03d}-{self.offset:06d}"


# --- which names may attribute speech -------------------------------------------------------------------------

# The names of the four in the narration (and which aliases do not count, or only in some chapters, and why) live
# in the character files: see `xiyou.names.narration_names`, `ambiguous_in_narration`, `names_him_in`.

#: Other speakers the narration names often (kept as the name). Longest match wins at the start of a clause.
OTHER_SPEAKERS: tuple[str, ...] = (
    "观音菩萨",
    "观世音菩萨",
    "观世音",
    "观音",
    "南海菩萨",
    "菩萨",
    "如来佛祖",
    "如来",
    "佛祖",
    "我佛",
    "玉皇大帝",
    "玉帝",
    "玉皇",
    "太白金星",
    "金星",
    "长庚星",
    "太上老君",
    "老君",
    "李天王",
    "托塔天王",
    "天王",
    "哪吒",
    "二郎",
    "真君",
    "显圣",
    "木叉",
    "惠岸",
    "龙王",
    "老龙",
    "土地",
    "山神",
    "城隍",
    "揭谛",
    "功曹",
    "阎王",
    "判官",
    "镇元子",
    "镇元大仙",
    "大仙",
    "清风",
    "明月",
    "太宗",
    "唐王",
    "太宗皇帝",
    "唐太宗",
    "魏征",
    "国王",
    "皇帝",
    "王后",
    "娘娘",
    "公主",
    "太子",
    "驸马",
    "女王",
    "国丈",
    "国师",
    "老者",
    "老儿",
    "老人",
    "老翁",
    "老汉",
    "老婆",
    "婆婆",
    "老妈妈",
    "妇人",
    "女子",
    "女怪",
    "妖精",
    "妖怪",
    "妖魔",
    "妖王",
    "魔王",
    "魔头",
    "老魔",
    "二魔",
    "三魔",
    "老妖",
    "小妖",
    "众妖",
    "群妖",
    "群魔",
    "众魔",
    "众怪",
    "怪物",
    "那怪",
    "老怪",
    "大王",
    "二大王",
    "三大王",
    "小的",
    "众猴",
    "群猴",
    "猴精",
    "众神",
    "众僧",
    "和尚",
    "僧官",
    "院主",
    "老院主",
    "方丈",
    "道士",
    "仙童",
    "童子",
    "樵夫",
    "渔翁",
    "牛魔王",
    "牛王",
    "罗刹女",
    "罗刹",
    "铁扇公主",
    "红孩儿",
    "圣婴",
    "黄风怪",
    "白骨精",
    "黄袍怪",
    "金角",
    "银角",
    "黑熊精",
    "熊罴",
    "金池长老",
    "高太公",
    "太公",
    "员外",
    "寇员外",
    "祖师",
    "菩提祖师",
    "须菩提祖师",
    "猪精",
    "凌虚子",
    "地藏王",
    "谛听",
    "秦广王",
    "十王",
    "文殊",
    "普贤",
    "弥勒",
    "寿星",
    "福星",
    "禄星",
    "东华帝君",
    "乌鸡国王",
    "行脚僧",
    "金顶大仙",
    "悟空的师父",
    "白龙马",
    "小龙",
    "龙马",
    "陈光蕊",
    "殷小姐",
    "满堂娇",
    "刘伯钦",
    "伯钦",
    "刘洪",
    "袁守诚",
    "泾河龙王",
    "孙行者的师父",
)

_PERSON_SUFFIX = set(
    "王者僧怪魔精仙神君帝佛萨婆儿子官将女童妖人公母兵卒汉家主师娘嫂姐妹哥弟爷翁叟士相臣吏丁奴婢徒鬼"
    "龙蛟虎狼熊猴猿鹿狐怪目伯叔侄郎夫妇生客贼使差监曹判星宿尊尼叉吒姑奶嬷仆驸后妃圣员丞姓众"
)
_NOT_NAMES = {
    "一个",
    "两个",
    "三个",
    "众人",
    "他们",
    "那人",
    "此人",
    "这人",
    "二人",
    "两人",
    "三人",
    "四众",
    "师徒",
    "师徒们",
    "兄弟",
    "弟兄",
    "大家",
    "旁边",
    "前者",
    "后面",
    "上面",
    "一声",
    "老者也",
    "两家",
    "那厮",
}
_PRONOUNS = (
    "他",
    "她",
    "我",
    "你",
    "彼",
    "其",
    "众",
    "大家",
    "二位",
    "两位",
    "三位",
    "四位",
    "列位",
    "众位",
    "诸位",
    "各位",
    "二人",
    "两个",
    "三人",
    "四人",
    "两人",
    "三众",
    "四众",
    "师徒",
    "弟兄",
    "兄弟",
    "他们",
    "俱",
    "都",
    "一齐",
    "一个",
    "有人",
    "那人",
    "这人",
    "那厮",
    "此人",
)
#: Words that open a clause before its subject: 却说、那、只见 …
_PREFIXES = (
    "却说",
    "话说",
    "且说",
    "话表",
    "却表",
    "且表",
    "再说",
    "又说",
    "原来",
    "当时",
    "此时",
    "这时",
    "那时",
    "少时",
    "须臾",
    "不一时",
    "不多时",
    "正说处",
    "正说间",
    "只见",
    "只听得",
    "只听",
    "又见",
    "忽见",
    "忽听得",
    "忽听",
    "但见",
    "早有",
    "却是",
    "却又",
    "那个",
    "这个",
    "这些",
    "那些",
    "好个",
    "好",
    "那",
    "这",
    "却",
    "又",
    "忽",
    "便",
    "慌得",
    "唬得",
    "急得",
    "喜得",
    "气得",
    "惊得",
    "吓得",
    "羞得",
    "恼得",
    "笑得",
    "只得",
    "随后",
    "随即",
    "才",
    "是",
    "此",
)
_VERBISH_START = re.compile(
    r"^[笑又便却也就才忙急连慌大高低暗冷喜怒惊哭叹跪拜合躬欠点摇回转起上下近走跳对向与和将把被教"
    r"递扯搀指吩问骂埋即启携执推报默软摸扛捽现迎遂随捧抱拉揪扶看听闻叩谢辞劝请唤呼叫喊嚷应答告禀奏念吟旁]"
)
_VERB_CHARS = set(
    "打将用把对向与和道说叫问笑喝骂见听看走跑跳拿捧抱扯搀拉揪扶跪拜叩忙急便又也就却才即遂乃都俱齐上下进出来去"
)
#: Narration that brings a new person on stage ('撞见群魔', '跳出七八个小猴'): the next speaker may be them.
_BRINGS_IN = re.compile(
    r"撞见|遇见|遇着|撞着|忽见|只见|看见|望见|见一|有一|有个|来了|走出|出来|(?:跳出|闪出|钻出)[一两三四五六七八九十几个那]"
)
_ADDRESSEE_BEFORE = re.compile(
    r"(?:对|向|与|和|同|叫|唤|问|教|请|替|跟|随|望|朝|扯住|扯着|拉着|拉住|揪着|揪住|搀着|搀住|扶着|扶起|指着|看着|劝|谢|辞|"
    r"拜|告|禀|奏|骂|喝|吩咐|嘱咐|道|称|见了|见)$"
)
_HEAR = re.compile(r"(?:只听得|只听|听得|听见|闻得|又听得|又听)")
_SENTENCE_END = re.compile(r"[。！？!?…”]")
_CLAUSE_SPLIT = re.compile(r"[，,；;：:]")  # not 、: "八戒、沙僧见了" is one subject pair
#: The verb that introduces speech, at the very end of the narration (before the colon).
_SPEECH_VERB = re.compile(
    r"(?:道|说|曰|云|叫|问|喝|骂|嚷|喊|答|应|报|奏|告|禀|吩咐|嘱咐|教|念|诵|吟|歌|呼|称|讲|言|叹|声|喏|回|谢|笑|哭|"
    r"吆喝|嚷道|叫道|说道)$"
)
#: Narration right after a quote, with no subject of its own, that goes on with the same speaker: '又道：', '叫：'.
_CONTINUE_SAME = re.compile(
    r"^(?:(?:却又|便又|又|再|复|因又|遂又|然后又)[^，。！？；“”问]{0,5}(?:道|说|叫|云|曰|骂|喝|吩咐)"
    r"|(?:便|即|又|却|就|遂|随)?(?:叫|教|吩咐|叫声|道声|喝声)[^，。！？；“”]{0,2})$"
)
_GROUP = re.compile(r"齐声|同声|一齐|齐道|都道|俱道|同道|共道|众口|大家|一起|齐|俱|都")


@dataclasses.dataclass(frozen=True)
class SpeakerNames:
    """The name table: alias -> speaker (a character id, or the name itself for other speakers)."""

    table: dict[str, str]
    pattern: re.Pattern[str]

    def match_start(self, clause: str) -> str | None:
        m = self.pattern.match(clause)
        return m.group(0) if m else None


@functools.cache
def speaker_names() -> SpeakerNames:
    """The narration names of the four (`xiyou.names.narration_names`) and the other speakers (with the forms the
    narration calls one of the four by before it names him, 那妖 …: other speakers outside his scenes)."""
    table: dict[str, str] = {name: name for name in (*OTHER_SPEAKERS, *unnamed_speaker_names())}
    for cid in CHARACTER_IDS:
        for name in narration_names(cid):
            table[name] = cid
    names = sorted(table, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(n) for n in names))
    return SpeakerNames(table=table, pattern=pattern)


# --- finding the speaker ---------------------------------------------------------------------------------------


def _strip_prefixes(clause: str) -> str:
    changed = True
    while changed and clause:
        changed = False
        for p in _PREFIXES:
            if clause.startswith(p) and len(clause) > len(p):
                clause = clause[len(p) :]
                changed = True
                break
    return clause


def _generic_subject(clause: str, names: SpeakerNames) -> str | None:
    """An unlisted person at the start of a clause: 'X道', 'X笑道' with X of 2-4 characters ending like a person.

    Not 'X' that starts like a verb or preposition ('对行者道', '递与唐僧道': the subject is elsewhere) or that holds a
    known name."""
    m = re.match(
        r"^([\u4e00-\u9fff]{2,4}?)(?:[又便却也就才忙急连慌大高低暗冷笑喜怒惊哭叹]{0,2})(?:道|说|叫|问|答|喝|骂|云|曰)$",
        clause,
    )
    if not m:
        return None
    x = m.group(1)
    if x[-1] not in _PERSON_SUFFIX or x in _NOT_NAMES or _VERBISH_START.match(x) or names.pattern.search(x):
        return None
    return x


def _resolve_clause(
    clause: str, names: SpeakerNames, chapter: int, is_verb_clause: bool
) -> tuple[str, str] | bool | None:
    """(speaker, name) when the clause names its subject; None when it has no subject (walk on); False to stop."""
    clause = clause.strip()
    if not clause:
        return None
    heard = _HEAR.search(clause)
    if heard:
        # 'X听得Y道' -> Y speaks; '听得半空中叫道' -> unknown. In an earlier clause the hearer is the subject:
        # 'X听得大喜，道' and 'X听得那呆子乱骂，…道' -> X speaks.
        if is_verb_clause:
            rest = _strip_prefixes(clause[heard.end() :])
            name = names.match_start(rest)
            return _speaker_for(name, names, chapter) if name else False
        heard_name = names.match_start(_strip_prefixes(clause[heard.end() :]))
        clause = clause[: heard.start()]
        if heard_name and (not _strip_prefixes(clause).strip() or clause.strip() in _PREFIXES):
            return False  # '只听那老魔传令，教：' — no hearer, someone heard: who speaks is unsure
    if is_verb_clause:
        # '被三藏喝住道': the agent after 被 speaks.
        passive = re.search(r"被(?:那|这)?", clause)
        if passive:
            agent = names.match_start(clause[passive.end() :])
            return _speaker_for(agent, names, chapter) if agent else False
    bare = _strip_prefixes(clause)
    name = names.match_start(clause) or names.match_start(bare)
    if name and not bare.startswith(name) and not clause.startswith(name):
        name = None
    if name and clause.startswith(name):
        bare = clause
    if name:
        after = bare[len(name) :]
        # Several people speaking together ('八戒沙僧齐声道', '三藏与八戒都道') -> not one speaker.
        if _GROUP.search(after[:8]) or (re.match(r"^[、与和同及并]", after) and _GROUP.search(after)):
            return False
        if after[:1] in ("、",) or re.match(r"^[与和同及][^道说叫问]{0,6}[齐都俱同]", after):
            return False
        # '沙僧与行者欠身道': two subjects (or 'A told B'): unsure.
        partner = re.match(r"^(?:[与和同及并、]|引着|带着|领着)", after)
        if partner and names.match_start(after[partner.end() :]):
            return False
        return _speaker_for(name, names, chapter)
    if bare.startswith(_PRONOUNS) or clause.startswith(_PRONOUNS):
        return False
    generic = _generic_subject(bare, names)
    if generic:
        return generic, generic
    # A clause opened by a demonstrative has a subject we do not know: stop.
    if clause.startswith(("那", "这", "一个", "有个", "有一个", "两个", "众", "只见", "却说", "话说", "且说")):
        return False
    # Starts with a noun-like person word we do not list (店家跪下道): a subject, unknown to us.
    if len(bare) >= 2 and bare[1] in _PERSON_SUFFIX and not _VERBISH_START.match(bare):
        return False
    # ... or a three-character one before a verb ('孤直公将身扯起', '凌空子打个哈哈道').
    if len(bare) >= 4 and bare[2] in _PERSON_SUFFIX and bare[3] in _VERB_CHARS and not _VERBISH_START.match(bare):
        return False
    # A clause without a subject that brings in someone ('可可的撞见群魔，当面挡住道'): who speaks is unsure,
    # unless the person is the one spoken to ('对八戒道', '扯住行者道').
    for m in names.pattern.finditer(bare):
        if not _ADDRESSEE_BEFORE.search(bare[: m.start()]):
            return False
    if _BRINGS_IN.search(bare):
        return False
    return None


def _speaker_for(name: str, names: SpeakerNames, chapter: int) -> tuple[str, str] | bool:
    if not names_him_in(name, chapter):
        return False
    return names.table[name], name


def attribute(narration: str, names: SpeakerNames, chapter: int) -> tuple[str, str]:
    """(speaker, name) for the narration that introduces a quote (ending in '道：' or the like)."""
    intro = narration.rstrip("：: ")
    sentence = _SENTENCE_END.split(intro)[-1]
    clauses = [c for c in _CLAUSE_SPLIT.split(sentence)]
    for i, clause in enumerate(reversed(clauses[-6:])):
        result = _resolve_clause(clause, names, chapter, is_verb_clause=i == 0)
        if result is False:
            return UNKNOWN, ""
        if result is not None:
            return result  # type: ignore[return-value]
    return UNKNOWN, ""


def _is_intro(narration: str) -> bool:
    """Does this narration introduce speech (ends with a colon, or with a speech verb like 叫声)?"""
    s = narration.rstrip()
    if not s:
        return False
    if s[-1] in "：:":
        return True
    return bool(re.search(r"(?:叫声|道声|喝声|叫一声|喊一声|叫|道|说|只教|教|喝|问)$", s))


#: A quote whose closing mark is missing or misprinted in the source (“ for ”) runs on into the narration and the
#: next speech: '…度日之言也？“二人谈笑多时…叫道：…'. Such a span is not one person's words, so its speaker is
#: unknown (precision first). Signs: a quote mark right after a sentence end, or a speech verb opening a quote.
_SWALLOWED_NARRATION = re.compile(r"[。！？!?…][“”]|(?:道|说|叫|问|曰|喝)[：:]\s*“")


def _opening_subject(narration: str, names: SpeakerNames) -> str | None:
    """The name that opens the narration ('那怪闻言，…。纳头下拜，告道：' -> 那怪) when the sentence that speaks is a
    later one that names no one and holds no pronoun (他, 她, 其); None otherwise. Used only inside a creature's
    scene: elsewhere such a sentence's subject is too often someone else ('…送与老渔。老渔把筏子撑开道')."""
    intro = narration.strip().rstrip("：: ")
    sentences = [x for x in _SENTENCE_END.split(intro) if x.strip()]
    if len(sentences) < 2:
        return None
    last = sentences[-1]
    if names.pattern.search(last) or re.search(r"[他她其]", last):
        return None
    return names.match_start(_strip_prefixes(sentences[0].strip()))


def _unnamed_spans(chapter: Chapter) -> list[tuple[int, int, frozenset[str], str]]:
    """(start, end, names, character id) of the chapter's scenes where the narration calls one of the four by what
    he is (那怪 …) before it names him (`xiyou.names.unnamed_scenes`). A scene whose marker is not in the text is
    left out."""
    text = chapter.text
    spans = []
    for cid, scene in unnamed_scenes(chapter.number):
        start = 0
        if scene.start:
            at = text.find(scene.start)
            if at < 0:
                continue
            start = text.rfind("\n", 0, at) + 1
        end = len(text)
        if scene.end:
            at = text.find(scene.end, start)
            if at < 0:
                continue
            end = at
        spans.append((start, end, frozenset(scene.names), cid))
    return spans


def extract_chapter(chapter: Chapter, names: SpeakerNames | None = None) -> list[Utterance]:
    """The utterances of one chapter, in order. Quotes that are mentions (号为“齐天大圣”) are left out."""
    names = names or speaker_names()
    text = chapter.text
    quotes = find_quotes(text)
    unnamed = _unnamed_spans(chapter)
    out: list[Utterance] = []
    prev: Quote | None = None
    prev_speaker: tuple[str, str] = (UNKNOWN, "")
    for q in quotes:
        para_start = text.rfind("\n", 0, q.start) + 1
        seg_start = max(para_start, prev.end if prev else 0)
        narration = text[seg_start : q.start]
        continued_after_prev = prev is not None and prev.end >= para_start
        if not narration.strip(" ") and q.start == para_start and para_start > 0:
            # The quote opens a paragraph: the intro may end the previous paragraph ('…报上森罗宝殿道：').
            prev_para_start = text.rfind("\n", 0, para_start - 1) + 1
            seg_start = max(prev_para_start, prev.end if prev else 0)
            narration = text[seg_start : para_start - 1]
            continued_after_prev = prev is not None and prev.end >= prev_para_start
        if not _is_intro(narration):
            prev = q
            if narration.strip():
                prev_speaker = (UNKNOWN, "")
            continue
        stripped = narration.strip().rstrip("：:")
        if continued_after_prev and _CONTINUE_SAME.match(stripped) and not names.pattern.search(stripped):
            speaker, name = prev_speaker
        else:
            speaker, name = attribute(narration, names, chapter.number)
        if speaker == UNKNOWN and unnamed:
            # in his scene, '那怪闻言，…去见观音。纳头下拜，告道：' — the creature opens the narration and the sentence
            # that speaks names no one
            opening = _opening_subject(narration, names)
            if opening:
                name = opening
                speaker = next((cid for a, b, ns, cid in unnamed if a <= q.start < b and name in ns), UNKNOWN)
                name = name if speaker != UNKNOWN else ""
        if speaker not in CHARACTER_IDS:
            # 那怪 in the scene where he is that creature (before the novel names him) is him.
            speaker = next((cid for a, b, ns, cid in unnamed if a <= q.start < b and name in ns), speaker)
        if _SWALLOWED_NARRATION.search(q.text):
            speaker, name = UNKNOWN, ""
        out.append(
            Utterance(chapter=chapter.number, offset=q.start, speaker=speaker, text=q.text, name=name, end=q.end)
        )
        prev, prev_speaker = q, (speaker, name)
    return out


def extract_utterances(novel: Novel | Iterable[Chapter]) -> list[Utterance]:
    """Every utterance of the novel, in order."""
    chapters = novel.chapters if isinstance(novel, Novel) else novel
    names = speaker_names()
    out: list[Utterance] = []
    for chapter in chapters:
        out.extend(extract_chapter(chapter, names))
    return out
