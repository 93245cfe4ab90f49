"""How the offline canon backend picks a character's line for a question: query terms, scores, deflections.

- The query is the person's own words (speaker labels and forms of address stripped by `xiyou.names`).
- Query terms: jieba words, with modern words the novel writes differently added in the novel's form (什么 → 甚么,
  哪里 → 那里 …). Function words weigh nothing; question cues (谁/什么/为什么/怎么/哪里/多少 …) and named
  entities of the novel (names of speakers, words of the chapter headings, nouns of jieba's dictionary that the
  novel uses: 妖怪, 金箍棒, 花果山, 人参果 …) weigh more than other words.
- Scores: word-level BM25 (each query word counted where it occurs in an exchange's context — what was said to
  the character — and, at half weight, in the reply), plus the character-bigram BM25 of `xiyou.canon.index`
  (bm25s) at a lower weight. Exchanges from chapters after `max_chapter` are masked before the top-k.
- Ranking, for a question: an exchange where he was asked something (the context is a question) ranks higher, a
  reply that is itself a question lower, a reply of the kind asked for (a place for 哪里, a number for 多少, a
  reason for 为什么, a person for 谁) higher; an exchange holding none of the novel's entities that the question
  names (or their co-referents: 八戒 → 悟能, 呆子 …) ranks lower.
- Relevance: the best score divided by the most the query's words could score (0..1). Below `DEFLECT_BELOW`
  (calibrated on `benchmarks/relevance/calibration.tsv`, never on the evaluation questions) the book cannot
  answer, and the character answers with one of his deflection lines: his own canon lines where he says he does
  not know, waves the matter off or changes the subject, found in the novel by the rules of `deflection_lines`.
  Except when the question names a proper name of one episode (通天河, 朱紫国, 火焰山: most of the novel's mentions
  fall within a few chapters): then he answers with his best line from that episode that holds some of the
  question (`episode_line`), speaking of the matter instead of shrugging it off; when the question's words stand
  in the novel around one of his lines (the narration and speeches just before it: `surroundings_line`), with
  that line; when the question names a scene however jieba cut it (琵琶 + 洞, 濯 + 垢 + 泉: `scene_phrases`), with
  the line he speaks nearest to where the novel names it (`scene_line`); and when the question's words stand
  together in one passage of the novel (`Passages`: 天竺国 + 嫦娥 → chapter 95), with his line spoken nearest to
  that passage (`passage_line`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
import threading
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from xiyou.canon.core import Canon
    from xiyou.canon.exchanges import Exchange
    from xiyou.character import Character

#: Below this relevance (0..1) the canon backend deflects instead of quoting a weak match. Calibrated with
#: `python benchmarks/relevance/calibrate.py` on the calibration questions (see benchmarks/relevance/README.md).
DEFLECT_BELOW = 0.45

#: Weights of the kinds of query words.
WEIGHT_CUE = 1.5
WEIGHT_ENTITY = 2.0
COMMON_ENTITY = 400  # a named thing the novel names more often than this weighs as a plain word
EPISODE_SPAN = 5  # chapters: a named thing whose mentions mostly fall within this many belongs to one episode
EPISODE_SHARE = 0.6
EPISODE_MIN_MENTIONS = 3
EPISODE_RELEVANCE = 0.2  # chosen on the dev sets a–g (0.1 brought a wrong line, 0.3 the same replies as 0.2)
WEIGHT_WORD = 1.0
WEIGHT_SINGLE = 0.5  # a one-character content word (吃, 饭, 山): meaningful but often part of other words
COVERAGE_CUE = 0.3  # in the relevance, a question word found says little about the topic
WEIGHT_YOU = 0.4  # 你/您: what was said to him asked about him (ranking only; says nothing of the topic)
SECOND_PERSON = frozenset({"你", "您"})
#: In the ranking, a topic word (a name of the novel, a content word of two characters or more) found in his own
#: line counts more than in what was said to him: a line that answers names what it is about. Other query words
#: (question words, one-character words) found in his line count REPLY_COVER.
REPLY_FIELD = 2.6
TOPIC_KINDS = frozenset({"entity", "word", "single"})
REPLY_COVER = 0.8  # in the relevance, a word found in his line counts a little less than in what was said to him
SHORT_FORM = 0.5  # a one-character novel form of a longer modern word
GRAM_FIELD = 0.3  # the character-bigram score, relative to the word score
SHORT_REPLY, SHORT_FACTOR = 8, 0.7  # a bare '去来！' says little: ranked lower, not excluded
LONG_REPLY = 60  # characters; longer lines (speeches, verse) are less likely to answer a question: down to half
BM25_K1, BM25_B = 1.2, 0.75
RELEVANCE_FLOOR = 0.25  # ranking = score x (RELEVANCE_FLOOR + relevance)
#: For a question: an exchange where he was asked something answers more often than one where he was told it …
ASKED_FACTOR = 1.2
#: … and a reply that is itself a question ('你从那里来？' to '你从哪里来？') answers less often.
COUNTER_QUESTION_FACTOR = 0.6
#: The question names a person, place or thing of the novel, and neither the line nor what was said to him does.
ENTITY_MISSING_FACTOR = 0.5
#: A reply of the kind the question asks for (a place for 哪里, a number for 多少, a reason for 为什么 …).
ANSWER_TYPE_FACTOR = 1.3
_IS_QUESTION = re.compile(r"[?？]|[吗么呢否][！!。]?$")
_ENDS_AS_QUESTION = re.compile(r"[?？][」』”\s]*$")
#: What each kind of question asks for (query cue -> what a reply of that kind holds).
ANSWER_TYPES: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = (
    (
        re.compile(r"哪里|哪儿|何处|在哪|那里人|来自|家乡|老家|从哪"),
        re.compile(r"山|洞|国|城|寺|河|庄|州|洲|海|宫|人氏|里路"),
    ),
    (
        re.compile(r"多少|几[个岁年次种斤天件位]|多重|多远|多长|多大|多高|多久"),
        re.compile(r"[一二三四五六七八九十百千万两]"),
    ),
    (re.compile(r"为什么|为甚么|为何|怎么会|凭什么"), re.compile(r"因|为|只为|原来|所以|故此|是以")),
    (
        re.compile(r"谁|哪个|那个人|什么人|何人"),
        re.compile(r"师父|菩萨|如来|老君|玉帝|大圣|行者|八戒|悟能|悟净|沙僧|唐僧|龙王|国王|大王|仙|佛|是我"),
    ),
)

#: Question words: how a question asks (the novel writes 甚么, 那里, 怎的, 怎生 …).
QUESTION_CUES = frozenset(
    """谁 什么 甚么 为什么 为甚么 为何 何 怎么 怎的 怎生 怎样 怎么样 如何
    哪里 那里 哪儿 何处 多少 几 几时 几个 何时 多远 多久 多大 多高 多长 多重""".split()
)
#: How much / how far: jieba glues it to the verb before it (翻多远, 多长时间) or cuts it in two (多 远).
_MEASURE_CUE = re.compile(r"^(.*?)(多远|多久|多大|多高|多长|多重|多少)(.*)$")
_MEASURE_TAIL = frozenset("远久大高长重少")
#: Where a thing came from (金箍棒是从哪里来的？): the novel tells it as 来历, 出处, …得来的.
_ORIGIN = re.compile(r"(?:哪里|哪儿|何处|哪)得?来的")
_WHERE_FROM_YOU = re.compile(r"[你您]们?(?:是|都是|到底是|究竟是)?从?(?:哪里|哪儿|何处|哪)")  # where he is from
#: Modern words the novel writes differently: the query also looks for the novel's form.
NOVEL_FORMS: dict[str, tuple[str, ...]] = {
    "什么": ("甚么", "甚"),
    "为什么": ("为甚么", "为何"),
    "哪里": ("那里", "何处"),
    "哪儿": ("那里",),
    "哪": ("那",),
    "怎么样": ("怎么", "如何"),
    "怎样": ("怎么", "如何"),
    "师傅": ("师父",),
    "名字": ("名", "姓名", "名号"),
    "叫": ("唤",),
    "食物": ("斋", "饭"),
    "吃饭": ("吃斋", "斋饭"),
    "喜欢": ("爱", "喜"),
    "家乡": ("家乡", "故乡", "人氏"),
    "来自": ("那里来", "人氏", "出身"),
    "老家": ("家",),
    "年纪": ("年纪", "岁"),
    "几岁": ("年纪", "岁"),
    "兄弟姐妹": ("兄弟",),
    "工作": ("营生", "勾当"),
    "职业": ("营生", "勾当"),
    "害怕": ("怕",),
    "生气": ("恼", "怒"),
    "睡觉": ("睡",),
    "武器": ("兵器",),
    "厉害": ("利害",),
    "朋友": ("相识", "朋友"),
    "妖怪": ("妖精", "妖怪", "怪"),
    "妖精": ("妖精", "妖怪", "怪"),
    # everyday words of today and how the novel's vernacular says them
    "美食": ("斋", "饭", "吃"),
    "早饭": ("斋", "饭"),
    "午饭": ("斋", "饭"),
    "晚饭": ("斋", "饭"),
    "好吃": ("好吃", "香甜", "吃"),
    "以前": ("当年", "昔日", "当时"),
    "从前": ("当年", "昔日", "当时"),
    "过去": ("当年", "昔日"),
    "生活": ("过活", "日子"),
    "钱": ("银子", "盘缠", "钱"),
    "衣服": ("衣裳", "衣服"),
    "孩子": ("孩儿",),
    "妻子": ("浑家", "老婆", "妻"),
    "老婆": ("浑家", "老婆"),
    "父亲": ("父", "爹", "老子"),
    "母亲": ("母", "娘"),
    "弟弟": ("兄弟",),
    "为何": ("为何", "为甚么"),
    "本领": ("本事", "手段"),
    "本事": ("本事", "手段"),
    "法术": ("法", "神通", "手段"),
    "厉害的": ("利害",),
    "国家": ("国", "邦"),
    "出发": ("起程", "起身", "离了"),
    "小时候": ("自幼", "幼时", "小时"),
    "童年": ("自幼", "幼时"),
    "后悔": ("悔",),
    "讨厌": ("恼", "嫌"),
    "最喜欢": ("爱", "喜"),
    "担心": ("忧", "愁", "挂念"),
    "走路": ("走路", "行路"),
    "跟头": ("筋斗",),
    "来历": ("来历", "出处", "得来的", "出自", "根源"),
    # a greeting: how the novel greets
    "你好": ("问讯", "稽首", "作揖", "有礼", "拜揖"),
    "您好": ("问讯", "稽首", "作揖", "有礼", "拜揖"),
}
#: Names as told today that the novel writes otherwise (its forms are what the query looks for): named things.
NOVEL_NAMES: dict[str, tuple[str, ...]] = {
    "紧箍咒": ("紧箍儿咒", "紧箍儿", "定心真言"),
    "白骨精": ("尸魔", "白骨夫人"),
    "二郎神": ("二郎", "显圣", "真君"),
    "女儿国": ("西梁", "女国"),
    "钉耙": ("钉钯",),
    "九齿钉耙": ("钉钯",),
    "如来佛祖": ("如来", "佛祖"),
    "小白龙": ("小龙", "龙马"),
    "白龙马": ("小龙", "龙马"),
    "唐僧肉": ("唐僧的肉", "唐僧肉"),
}
#: Words that carry no topic: pronouns, particles, auxiliaries, light verbs, generic question frames.
FUNCTION_WORDS = frozenset(
    """的 了 吗 呢 吧 啊 呀 哦 嘛 么 是 在 有 和 与 及 跟 就 都 也 还 又 很 太 更 最 这 那 个 一 不 没 没有
    我 你 他 她 它 们 您 俺 咱 把 被 让 给 对 会 能 要 想 去 来 说 过 着 得 地 之 而 其 以 于 为 所 乎 者 矣 焉 哉 从
    吾 汝 尔 此 彼 却 便 只 我们 你们 他们 她们 自己 一个 这个 那个 这些 那些 这样 那样 现在 觉得 认为 看待 看法
    是否 有没有 可以 应该 能否 可能 一些 一下 时候 东西 事情 问题 如果 因为 所以 但是 而且 或者 还是 然后 比较
    非常 特别 真的 一直 已经 曾经 平时 通常 怎么看 如何看待 什么样 哪些 哪个 哪种 一种 一样 请问 告诉 知道
    最近 经常 喜不喜欢 是不是 会不会 能不能 好不好 以后 之后 后来 之前 西游记 西游""".split()
)  # the book's own title (西游记) names no scene of it: chapter 100's last lines hold it
#: A verb's directional complement or aspect particle: today's 抢走了 is the novel's 抢去了 or 抢了.
_COMPLEMENT_TAIL = re.compile(r"^(.+?)(?:走|去|掉|来|回|到|出|起|下|上|住|过|着|了)+$")
_JIEBA_LOCK = threading.Lock()
_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+|[A-Za-z0-9]+")


@functools.cache
def _jieba():
    import logging

    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)
    with _JIEBA_LOCK:
        jieba.initialize()
    return jieba, jieba.posseg.dt.word_tag_tab


_NOUN_TAGS = ("n", "nr", "ns", "nt", "nz", "nrt", "nrfg")
_PROPER_TAGS = frozenset(_NOUN_TAGS[1:])


@dataclasses.dataclass(frozen=True)
class Term:
    """A word of the query with the forms it takes in the novel (the word itself first)."""

    forms: tuple[str, ...]
    weight: float
    kind: str  # "cue", "entity", "word", "single", "you"

    @property
    def text(self) -> str:
        return self.forms[0]

    @property
    def coverage_weight(self) -> float:
        """How much finding it says the exchange is about the question (a question word alone says little)."""
        return {"cue": COVERAGE_CUE, "you": 0.0}.get(self.kind, self.weight)


def segment(text: str) -> list[str]:
    """jieba words of `text` (punctuation and blank space dropped; Latin words lower-cased)."""
    jieba, _ = _jieba()
    words = []
    for run in _WORD.findall(text):
        if run.isascii():
            words.append(run.lower())
        else:
            words.extend(w for w in jieba.lcut(run, HMM=True) if w.strip())
    return words


class Vocabulary:
    """What the novel knows: how often a word occurs in it, and which words name its people, places and things."""

    def __init__(self, canon: Canon) -> None:
        from xiyou import names

        self.text = "\n".join(ch.text for ch in canon.novel.chapters)
        entities: set[str] = set()
        for cid in names.CHARACTER_IDS:
            entities.update(n for n in names.aliases(cid) if len(n) >= 2)
        counts: dict[str, int] = {}
        for u in canon.utterances:
            if u.name and len(u.name) >= 2 and u.speaker not in names.CHARACTER_IDS:
                counts[u.name] = counts.get(u.name, 0) + 1
        entities.update(n for n, k in counts.items() if k >= 2)
        _, tags = _jieba()
        for ch in canon.novel.chapters:
            for w in segment(ch.title):
                if len(w) >= 2 and tags.get(w, "n") in _NOUN_TAGS:
                    entities.add(w)
        self.entities = frozenset(entities)
        self._counts: dict[str, int] = {}
        self._chapters = [(ch.number, ch.text) for ch in canon.novel.chapters]

    def episode(self, word_forms: Sequence[str]) -> tuple[int, int] | None:
        """(first, last) chapter of the episode a named thing belongs to: a run of at most EPISODE_SPAN chapters
        that holds most (EPISODE_SHARE) of the novel's mentions of it (通天河 → 47-50); None for a thing named all
        through the book (金箍棒) or seldom."""
        per = [(n, sum(text.count(f) for f in word_forms)) for n, text in self._chapters]
        total = sum(k for _, k in per)
        if total < EPISODE_MIN_MENTIONS:
            return None
        best = (0, 0, 0)
        for i in range(len(per)):
            window = per[i : i + EPISODE_SPAN]
            k = sum(c for _, c in window)
            if k > best[0]:
                held = [n for n, c in window if c]
                best = (k, held[0], held[-1])
        return (best[1], best[2]) if best[0] >= EPISODE_SHARE * total else None

    def count(self, word: str) -> int:
        n = self._counts.get(word)
        if n is None:
            n = self.text.count(word)
            self._counts[word] = n
        return n

    def is_name(self, word: str) -> bool:
        """A proper name of the novel (通天河, 比丘国, 火焰山, 黄袍怪), not a common noun it uses (女孩, 性格)."""
        _, tags = _jieba()
        return word in self.entities or word in NOVEL_NAMES or tags.get(word) in _PROPER_TAGS

    def is_entity(self, word: str) -> bool:
        """A name of a person, place or thing of the novel: listed, or a dictionary noun the novel uses often."""
        if word in self.entities:
            return True
        _, tags = _jieba()
        return len(word) >= 2 and tags.get(word) in _NOUN_TAGS and self.count(word) >= 3


def query_words(text: str) -> list[str]:
    """The words of a question as `segment` cuts them, with two of jieba's cuts undone: a measure question glued to
    its verb or cut in two (翻多远 → 翻 多远, 多 远 → 多远) and 你 glued to a verb (你活 → 你 活); a question
    where a thing came from also asks its 来历."""
    words: list[str] = []
    for word in segment(text):
        if words and words[-1] == "多" and word in _MEASURE_TAIL:
            words[-1] = "多" + word
            continue
        found = _MEASURE_CUE.match(word)
        if found and word not in QUESTION_CUES and word not in NOVEL_FORMS:
            words.extend(part for part in found.groups() if part)
            continue
        if len(word) > 1 and word[0] in SECOND_PERSON and word not in FUNCTION_WORDS and word not in NOVEL_FORMS:
            words.extend((word[0], word[1:]))
            continue
        words.append(word)
    if _ORIGIN.search(text) and not _WHERE_FROM_YOU.search(text):
        words.append("来历")
    return words


def query_terms(text: str, vocabulary: Vocabulary) -> list[Term]:
    """The weighted words of a query (see the module doc); the same word once, at its highest weight."""
    from xiyou import names

    terms: dict[str, Term] = {}
    for word in query_words(text):
        if word in SECOND_PERSON:
            terms.setdefault("你", Term(("你",), WEIGHT_YOU, "you"))
            continue
        if word in FUNCTION_WORDS:
            continue
        cid = names.resolve(word)
        if word in QUESTION_CUES:
            weight, kind = WEIGHT_CUE, "cue"
        elif cid or word in NOVEL_NAMES or vocabulary.is_entity(word):
            weight, kind = WEIGHT_ENTITY, "entity"
            if vocabulary.count(word) > COMMON_ENTITY:  # 师父, 妖精, 八戒: on every page, they say little of the topic
                weight = WEIGHT_WORD
        elif len(word) == 1 and not word.isascii():
            weight, kind = WEIGHT_SINGLE, "single"
        else:
            weight, kind = WEIGHT_WORD, "word"
        novel_forms = [f for f in (*NOVEL_FORMS.get(word, ()), *NOVEL_NAMES.get(word, ())) if f not in FUNCTION_WORDS]
        novel_forms += verb_forms(word, vocabulary)
        if cid:  # one of the four: any of his names (八戒 → 悟能, 猪八戒 …)
            novel_forms += [a for a in names.aliases(cid) if len(a) >= 2]
        forms = tuple(dict.fromkeys([word, *novel_forms]))
        if word not in terms or terms[word].weight < weight:
            terms[word] = Term(forms, weight, kind)
    return list(terms.values())


def verb_forms(word: str, vocabulary: Vocabulary) -> list[str]:
    """How the novel says a verb of today that it never uses as written (抢走了 → 抢去, 抢了, 抢; 拿走 → 拿去 …):
    the verb with 去 or 了 after it, and the verb alone (weaker, when it is one character)."""
    m = _COMPLEMENT_TAIL.match(word)
    if m is None or vocabulary.count(word) > 0 or m.group(1) in FUNCTION_WORDS:
        return []  # 去过, 来了: no verb of their own
    stem = m.group(1)
    return [f for f in (stem + "去", stem + "了", stem) if f != word and f not in FUNCTION_WORDS]


_SPEECH_BREAK = re.compile(r"[“”\n]")
_NOT_TEXT = re.compile(r"[\W_]+")
BOOK_ASKED_CHARS = 4  # a shorter question (你好吗) is anyone's words, not one the book put to him


def _last_speech(context: str) -> str:
    """What was said to him, as matched: where the extraction took in narration and other speeches with it (a quote
    mark or a line break inside), only the last speech (else a stray '喜欢' in the narration matches anything)."""
    return _SPEECH_BREAK.split(context)[-1] or context


class Field:
    """The texts of one field (contexts or replies) of a character's exchanges, for word-level BM25."""

    def __init__(self, texts: Sequence[str]) -> None:
        import numpy as np

        self.size = len(texts)
        self.joined = "\x00".join(texts)
        starts = [0]
        for t in texts[:-1]:
            starts.append(starts[-1] + len(t) + 1)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.lengths = np.asarray([max(len(t), 1) for t in texts], dtype=np.float32)
        self.avg = float(self.lengths.mean()) if self.size else 1.0
        self._norm = BM25_K1 * (1 - BM25_B + BM25_B * self.lengths / self.avg)

    def idf(self, df: int) -> float:
        return math.log(1 + (self.size - df + 0.5) / (df + 0.5))

    def scores(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        """(BM25 score of `word` in each text, whether each text holds it)."""
        import numpy as np

        tf = np.zeros(self.size, dtype=np.float32)
        if self.size == 0 or not word:
            return tf, tf > 0
        positions = [m.start() for m in re.finditer(re.escape(word), self.joined)]
        if positions:
            docs = np.searchsorted(self.starts, np.asarray(positions), side="right") - 1
            np.add.at(tf, docs, 1.0)
        held = tf > 0
        idf = self.idf(int(np.count_nonzero(held)))
        return idf * tf * (BM25_K1 + 1) / (tf + self._norm), held


@dataclasses.dataclass(frozen=True)
class Scored:
    """For one query: a ranking score of every exchange of a character, and each exchange's relevance (0..1): the
    weighted share of the query's words found in what was said to him there (in his reply: half)."""

    scores: np.ndarray
    relevance: np.ndarray
    terms: tuple[Term, ...]


class Answerer:
    """Scores one character's exchanges for a question (see the module doc). Built once per canon and character."""

    def __init__(self, canon: Canon, character_id: str, vocabulary: Vocabulary) -> None:
        import numpy as np

        self.canon = canon
        self.character_id = character_id
        self.vocabulary = vocabulary
        self.exchanges: list[Exchange] = canon.exchanges(character_id)
        self.context = Field([_last_speech(ex.context.text) if ex.context else "" for ex in self.exchanges])
        self.reply = Field([ex.reply.text for ex in self.exchanges])
        self.chapters = np.asarray([ex.chapter for ex in self.exchanges], dtype=np.int32)
        self.asked = np.asarray(
            [bool(ex.context and _IS_QUESTION.search(ex.context.text.strip())) for ex in self.exchanges]
        )
        self.counter_question = np.asarray([bool(_ENDS_AS_QUESTION.search(ex.reply.text)) for ex in self.exchanges])
        # a line that ends announcing what follows (…上前来站稳着，我说与你听：) leads into verse the novel prints
        # apart: by itself it says nothing, and is never picked while anything else is
        self.lead_in = np.asarray([ex.reply.text.rstrip().endswith(("：", ":")) for ex in self.exchanges])
        self.answer_types = [
            np.asarray([bool(holds.search(ex.reply.text)) for ex in self.exchanges]) for _, holds in ANSWER_TYPES
        ]
        lengths = np.asarray([len(ex.reply.text) for ex in self.exchanges], dtype=np.float32)
        factor = np.clip(LONG_REPLY / np.maximum(lengths, 1.0), 0.5, 1.0)
        self.length_factor = np.where(lengths < SHORT_REPLY, SHORT_FACTOR, factor).astype(np.float32)

    def score(self, query: str) -> Scored:
        import numpy as np

        from xiyou.canon.index import tokenize

        n = len(self.exchanges)
        terms = tuple(query_terms(query, self.vocabulary))
        total = np.zeros(n, dtype=np.float32)
        covered = np.zeros(n, dtype=np.float32)
        named = np.zeros(n, dtype=bool)  # holds one of the entities the question names
        weights = 0.0
        for term in terms:
            best_score = np.zeros(n, dtype=np.float32)
            found = np.zeros(n, dtype=np.float32)
            for form in term.forms:
                # a one-character form of a longer word (名 for 名字) is weaker evidence than the word
                part = SHORT_FORM if len(form) < len(term.text) and len(form) == 1 else 1.0
                in_context, held_context = self.context.scores(form)
                in_reply, held_reply = self.reply.scores(form)
                score = in_context + (REPLY_FIELD if term.kind in TOPIC_KINDS else REPLY_COVER) * in_reply
                held = np.where(held_context, 1.0, np.where(held_reply, REPLY_COVER, 0.0))
                best_score = np.maximum(best_score, part * score)
                found = np.maximum(found, part * held)
            total += term.weight * best_score
            covered += term.coverage_weight * found
            if term.kind == "entity":
                named |= found > 0
            weights += term.coverage_weight
        relevance = covered / weights if weights > 0 else covered
        word_best = float(total.max()) if n else 0.0
        # character bigrams of the content words (what jieba cut differently still meets), scaled to GRAM_FIELD of
        # the best word score
        content = [t.text for t in terms if t.kind not in ("cue", "you") and not t.text.isascii()]
        bigrams = sorted({g for w in content for g in tokenize(w) if len(g) == 2})
        index = self.canon.index(self.character_id, "context") if bigrams and n else None
        ids = index.model.get_tokens_ids(bigrams) if index is not None and index.model is not None else []
        if ids:
            gram = np.asarray(index.model.get_scores_from_ids(ids), dtype=np.float32)
            top = float(gram.max())
            if top > 0:
                total = total + GRAM_FIELD * (gram / top) * (word_best or 1.0)
        # rank by the scores, favouring exchanges that hold more of the question, and lines short enough to answer
        ranking = total * (RELEVANCE_FLOOR + relevance) * self.length_factor * ~self.lead_in
        if any(t.kind == "entity" for t in terms):
            ranking = ranking * np.where(named, 1.0, ENTITY_MISSING_FACTOR)
        if _IS_QUESTION.search(query.strip()) or any(t.kind == "cue" for t in terms):
            ranking = (
                ranking
                * np.where(self.asked, ASKED_FACTOR, 1.0)
                * np.where(self.counter_question, COUNTER_QUESTION_FACTOR, 1.0)
            )
            for (asks, _), holds in zip(ANSWER_TYPES, self.answer_types, strict=True):
                if asks.search(query):
                    ranking = ranking * np.where(holds, ANSWER_TYPE_FACTOR, 1.0)
        return Scored(ranking.astype(np.float32), relevance.astype(np.float32), terms)

    def asked_in_book(self, query: str) -> int | None:
        """The first exchange whose context (what was said to him just before his line) holds `query` word for word
        (punctuation and spaces aside; at least BOOK_ASKED_CHARS characters), or None: a question the book put to
        him, as the apps suggest them (御弟哥哥，你吃荤吃素？)."""
        wanted = _NOT_TEXT.sub("", query)
        if len(wanted) < BOOK_ASKED_CHARS:
            return None
        contexts = (_last_speech(ex.context.text) if ex.context else "" for ex in self.exchanges)
        spoken = _held(self, "_spoken", lambda: [_NOT_TEXT.sub("", text) for text in contexts])
        return next((i for i, said in enumerate(spoken) if wanted in said), None)

    def mask(self, max_chapter: int | None) -> np.ndarray | None:
        """True for the exchanges a reader who has read up to `max_chapter` may hear (None: all)."""
        return None if max_chapter is None else self.chapters <= max_chapter


def best(
    scored: Scored,
    exchanges: Sequence[Exchange],
    allowed: np.ndarray | None,
    exclude: Collection[str],
    min_relevance: float = 0.0,
    k: int = 64,
) -> int | None:
    """The index of the best-ranked allowed exchange whose reply is not in `exclude` and whose relevance is at
    least `min_relevance`, among the top k; None when there is none (the book cannot answer)."""
    from xiyou.canon.index import top_k

    for i in top_k(scored.scores, k, allowed):
        if exchanges[i].reply.text.strip() not in exclude and scored.relevance[i] >= min_relevance:
            return i
    return None


# --- deflections --------------------------------------------------------------------------------------------------

#: A clause that says he does not know or has never seen it, or waves the matter off / changes the subject.
_DEFLECTING_CLAUSE = re.compile(
    r"^(?:(?:贫僧|老孙|我|老猪|弟子|小弟|俺|我们|这个|实)?(?:也|实|委实|真个|却|一发|倒)?"
    r"(?:不知|不晓得|不曾见|不曾听见|不曾闻|不认得|不懂|那里晓得|那里知道|晓得甚么)(?:道|得|哩|了|也|甚么)?$"
    r"|且?莫管|休管|不要管|管他|且休|少题|休题|休提|莫说(?:$|莫说|这|了)|不消说|莫胡说|莫胡谈|不要胡说|你?说甚么|罢了$"
    r"|闲话少说|且住|莫问|休问|不要问|不必(?:烦叙|多讲|多言|说了)|且?莫斗口|休斗口|一言难尽"
    r"|说不得|天晓得|谁晓得|(?:我|弟子|小弟)?(?:又)?不曾(?:在心|理会)|那里认得|知道是甚缘故)"
)
#: A clause that moves on (let us get going): part of a deflection, never one by itself.
_MOVING_ON = re.compile(r"^(?:我们|我等|你我)?(?:且|快|快早|早)?(?:走路|赶路|去来|去罢|走罢|赶早儿去来?)$")
_WEAK_CLAUSE = re.compile(r"^罢了$")
WEAK_LINE_MAX = 6
_CLAUSES = re.compile(r"[^，。！？；、,.!?;…]+")
_CLAUSE_ENDS = re.compile(r"([^，。！？；、,.!?;…]+)([，。！？；、,.!?;…]*)")
#: Concrete story things make a deflection sound off the point of a question about something else.
_CONCRETE = re.compile(
    r"女流|仙童|老官|妖|怪|魔|精|菩萨|龙|王|山|洞|城|国|马|棒|钯|杖|宝|经|寺|庙|井|桥|河|水|火|风|死|杀|打|捉|拿|救|金|银|病|药|这里|那里"
)
DEFLECTION_MAX_CHARS = 24
DEFLECTING_CLAUSE_MAX = 9


def is_deflection(
    text: str,
    other_names: Collection[str],
    max_chars: int = DEFLECTION_MAX_CHARS,
    clause_max: int = DEFLECTING_CLAUSE_MAX,
) -> bool:
    """A line where the speaker says he does not know, waves the matter off or changes the subject: short, with a
    short clause that says so (`不知，不知。`, `莫管，莫管，我有处治。`, `少题闲话，我们赶早儿去来。`), and with no
    concrete story thing or other person's name in it (so it fits a question the book cannot answer)."""
    t = text.strip()
    if not 2 <= len(t) <= max_chars or "\n" in t:
        return False
    clauses = [c for c in _CLAUSES.findall(t) if len(c) <= clause_max and _DEFLECTING_CLAUSE.match(c)]
    rest = [m for m in _CLAUSE_ENDS.finditer(t) if m.group(1) not in clauses]
    if not clauses or _CONCRETE.search("，".join(m.group(1) for m in rest)):
        return False  # ('那里认得！' is a shrug; '莫管他，妖精自有处置。' is about something)
    if any("他" in m.group(1)[:-1] or m.group(2).startswith(("？", "?")) for m in rest):
        return False  # the rest is about someone ('不消说了！他们定是…') or asks something ('不知，是甚么木？')
    if all(_WEAK_CLAUSE.match(c) for c in clauses) and len(t) > WEAK_LINE_MAX:
        return False  # '罢了！来到尽头路了！' goes on about something: only a bare '罢了！罢了！' waves it off
    return not any(n in t for n in other_names)


#: (line, clause) length limits tried in turn until a character has MIN_DEFLECTIONS lines (悟净 says little).
DEFLECTION_LIMITS = ((DEFLECTION_MAX_CHARS, DEFLECTING_CLAUSE_MAX), (36, 12), (48, 16))
MIN_DEFLECTIONS = 8


def deflection_lines(canon: Canon, character_id: str) -> list[Exchange]:
    """The character's deflection exchanges (see `is_deflection`), in novel order, one per distinct line; the
    length limits are relaxed in steps (DEFLECTION_LIMITS) while he has fewer than MIN_DEFLECTIONS."""
    from xiyou import names

    others = [n for cid in names.CHARACTER_IDS if cid != character_id for n in names.aliases(cid) if len(n) >= 2]
    address = ["师父", "师兄", "哥哥", "大哥", "二哥", "兄弟", "贤弟", "老儿", "施主", "长老"]
    address += [n for cid in names.CHARACTER_IDS if cid != character_id for n in names.forms_of_address(cid)]
    out: list[Exchange] = []
    for level, (max_chars, clause_max) in enumerate(DEFLECTION_LIMITS):
        # first without forms of address either (师父，… sounds odd to a visitor), then with them
        avoid = others if level else others + address
        seen: set[str] = set()
        out = []
        for ex in canon.exchanges(character_id):
            text = ex.reply.text.strip()
            if text not in seen and is_deflection(text, avoid, max_chars, clause_max):
                seen.add(text)
                out.append(ex)
        if len(out) >= MIN_DEFLECTIONS:
            break
    return out


_SELF_AND_PARTICLES = re.compile(
    r"贫僧|老孙|老猪|老沙|弟子|小弟|我|俺|这个|却|实|也|哩|了|啊|呀|阿|[，。！？；、,.!?;…\s]"
)
PURE = 0.5  # share of a line that is the deflection itself for it to be a plain one


def purity(text: str) -> float:
    """How much of a deflection line is the deflection itself (its deflecting clauses, self-reference, particles,
    punctuation): 1.0 for '不知，不知。', low for '且莫管他，进去进去，或者这道士有些德行，未可知也。'."""
    t = text.strip()
    if not t:
        return 0.0
    kept = "".join(c for c in _CLAUSES.findall(t) if not (_DEFLECTING_CLAUSE.match(c) or _MOVING_ON.match(c)))
    rest = _SELF_AND_PARTICLES.sub("", kept)
    return 1.0 - len(rest) / len(t)


#: The clean shrugs: he does not know, or the talk is idle (no '罢了', no '我有处治', no '知道是甚缘故').
_CLEAN_SHRUG = re.compile(r"不知|不晓得|不曾见|不曾听见|少题|休题|休提|闲话|不必烦叙|管他|胡说|胡谈")
MIN_CLEAN = 2  # clean shrugs needed to rotate among them alone
CLEAN = 0.8  # purity of a clean shrug: at most a few words of its scene ('我挑担前走，…' is not one)


def is_clean_shrug(text: str) -> bool:
    """A deflection that fits any question: almost all of it the shrug itself, and it says he does not know or
    that the talk is idle (`贫僧不知。`, `少题闲话，我们赶早儿去来。`), not `罢了！罢了！` or
    `我挑担前走，不曾在心，也不曾听见。`."""
    return purity(text) >= CLEAN and bool(_CLEAN_SHRUG.search(text))


def pick_deflection(
    lines: Sequence[Exchange], query: str, exclude: Collection[str], max_chapter: int | None
) -> Exchange | None:
    """A deflection line for `query`: the clean shrugs first (`is_clean_shrug`), then the other plain ones (purity
    >= PURE), then the rest; within each, picked by a stable hash of the query, skipping lines already said in the
    conversation. With fewer than MIN_CLEAN clean shrugs (悟净 shrugs little), the plain ones rotate with them, each
    clean one coming up twice as often."""
    pool = [ex for ex in lines if (max_chapter is None or ex.chapter <= max_chapter)]
    start = int.from_bytes(hashlib.sha256(query.encode("utf-8")).digest()[:8], "big")
    clean = [ex for ex in pool if is_clean_shrug(ex.reply.text)]
    plain = [ex for ex in pool if purity(ex.reply.text) >= PURE and ex not in clean]
    if len(clean) < MIN_CLEAN:  # one line is no rotation: his other plain ones join it, at half its share
        clean, plain = clean * 2 + plain, []
    for tier in (clean, plain, [ex for ex in pool if purity(ex.reply.text) < PURE]):
        for i in range(len(tier)):
            ex = tier[(start + i) % len(tier)]
            if ex.reply.text.strip() not in exclude:
                return ex
    return None


# --- per canon caches ---------------------------------------------------------------------------------------------

_CACHE_LOCK = threading.RLock()  # re-entrant: one cached thing is built from another (Surroundings from the novel)


def answerer(canon: Canon, character_id: str) -> Answerer:
    """The Answerer of a character, built once per canon (held on the canon object)."""
    store = canon.__dict__.setdefault("_answerers", {})
    found = store.get(character_id)
    if found is not None:
        return found
    with _CACHE_LOCK:
        if "_vocabulary" not in canon.__dict__:
            canon.__dict__["_vocabulary"] = Vocabulary(canon)
        if character_id not in store:
            store[character_id] = Answerer(canon, character_id, canon.__dict__["_vocabulary"])
        return store[character_id]


def listed_exchanges(canon: Canon, character_id: str, ids: Sequence[str]) -> list[Exchange]:
    """His exchanges that a character file names by id (`book_questions`, `small_talk`, `about`), in that order;
    those this copy of the novel does not hold are left out. The index by id is built once per canon."""
    store = canon.__dict__.setdefault("_exchanges_by_id", {})
    if character_id not in store:
        store[character_id] = {ex.id: ex for ex in canon.exchanges(character_id)}
    by_id = store[character_id]
    return [by_id[i] for i in ids if i in by_id]


def first_unsaid(lines: Sequence[Exchange], exclude: Collection[str], max_chapter: int | None) -> Exchange | None:
    """The first of `lines` not yet said in the conversation (`exclude`) and from a chapter a reader has reached."""
    for ex in lines:
        if ex.reply.text.strip() not in exclude and (max_chapter is None or ex.chapter <= max_chapter):
            return ex
    return None


def book_questions(canon: Canon, character: Character) -> list[str]:
    """The questions put to him in the novel that `character.book_questions` names (by the id of his answer there),
    in that order; those this copy of the novel does not hold are left out."""
    found = listed_exchanges(canon, character.id, character.book_questions)
    return [" ".join(ex.context.text.split()) for ex in found if ex.context is not None]


def offline_suggestions(character: Character) -> list[str]:
    """His `book_questions` in the novel at XIYOU_NOVEL (the canon his offline backend loads): what the apps and
    `xiyou show` suggest offline; [] when he has none or the novel cannot be read."""
    from xiyou.canon import NovelError, get_canon

    if not character.book_questions:
        return []
    try:
        return book_questions(get_canon(), character)
    except NovelError:
        return []


def deflections(canon: Canon, character_id: str) -> list[Exchange]:
    """`deflection_lines`, computed once per canon."""
    store = canon.__dict__.setdefault("_deflections", {})
    if character_id not in store:
        store[character_id] = deflection_lines(canon, character_id)
    return store[character_id]


def episode_line(
    answerer: Answerer, scored: Scored, allowed: np.ndarray | None, exclude: Collection[str]
) -> int | None:
    """For a question the book cannot answer outright that names a thing of one episode (通天河, 稀柿衕, 车迟国):
    his best-ranked line from that episode's chapters holding some of the question (relevance at least
    EPISODE_RELEVANCE), so he speaks of the matter instead of shrugging it off; None otherwise."""
    import numpy as np

    vocabulary = answerer.vocabulary
    named = [t for t in scored.terms if t.kind == "entity" and vocabulary.is_name(t.text)]
    spans = [vocabulary.episode(t.forms) for t in named]
    spans = [s for s in spans if s is not None]
    if not spans:
        return None
    inside = np.zeros(len(answerer.exchanges), dtype=bool)
    for first, last in spans:
        inside |= (answerer.chapters >= first) & (answerer.chapters <= last)
    mask = inside if allowed is None else inside & allowed
    return best(scored, answerer.exchanges, mask, exclude, EPISODE_RELEVANCE)


def names_an_episode(text: str, vocabulary: Vocabulary) -> bool:
    """Whether `text` names a place or being of one episode of the novel (通天河, 狮驼岭, 五庄观), as a name the
    novel's vocabulary knows (`Vocabulary.episode`) or however jieba cut it (`scene_phrases`); the four never count."""
    from xiyou import names

    terms = query_terms(text, vocabulary)
    named = [t for t in terms if t.kind == "entity" and names.resolve(t.text) is None]
    return any(vocabulary.episode(t.forms) is not None for t in named) or bool(scene_phrases(text, vocabulary))


# --- the scene a question names -----------------------------------------------------------------------------------

SCENE_WORDS = 3  # a phrase of the question is at most this many jieba words …
SCENE_CHARS = (2, 5)  # … and this many characters
SCENE_REACH = 1500  # characters of the chapter: his line must be spoken this close to where the novel names it
SCENE_MIN_CHARS = 8  # a shorter line (悟空！, 怎么说？) says nothing of the scene


def scene_phrases(query: str, vocabulary: Vocabulary) -> list[str]:
    """Phrases of the question that name one episode of the novel, however jieba cut them (琵琶 + 洞 → 琵琶洞,
    濯垢 + 泉 → 濯垢泉): runs of consecutive words whose mentions mostly fall within a few chapters; the longest
    of overlapping ones. Names of the four and words on every page never count."""
    from xiyou import names

    words = [w for w in segment(query) if not w.isascii()]
    found: list[str] = []
    for i in range(len(words)):
        for j in range(i + 1, min(i + SCENE_WORDS, len(words)) + 1):
            run = words[i:j]
            phrase = "".join(run)
            if not SCENE_CHARS[0] <= len(phrase) <= SCENE_CHARS[1]:
                continue
            ends = (run[0], run[-1])
            if any(w in FUNCTION_WORDS or w in QUESTION_CUES or w in SECOND_PERSON for w in ends):
                continue
            if any(names.resolve(w) for w in run):
                continue
            if not _names_a_thing(run, vocabulary):
                continue
            count = vocabulary.count(phrase)
            if EPISODE_MIN_MENTIONS <= count <= COMMON_ENTITY and vocabulary.episode((phrase,)) is not None:
                found.append(phrase)
    return [p for p in found if not any(p != q and p in q for q in found)]


#: How the novel's names of places and beings end (火云洞, 濯垢泉, 稀柿衕, 车迟国; 蜘蛛精, 镇元大仙, 六耳猕猴)
_NAME_END = re.compile(r"[山洞河国岭观寺庄泉渡涧城关府州宫殿院林岛海江湖潭池峰村衕精怪魔王仙圣佛神母猴鬼龙]$")


def _names_a_thing(run: Sequence[str], vocabulary: Vocabulary) -> bool:
    """Whether consecutive words of a question name someone or something of the novel: one word that jieba's
    dictionary tags as a name (通天河) or that the novel's speakers and chapter headings use (铁扇公主, 红孩儿), or
    a phrase jieba does not know that ends as the novel's names do (琵琶 + 洞, 濯 + 垢 + 泉). A word of the
    dictionary (挑战, 性格, 故事) or a phrase like 最能 names nothing, whatever the novel does with it."""
    _, tags = _jieba()
    phrase = "".join(run)
    if len(run) == 1 and (tags.get(phrase) in _PROPER_TAGS or phrase in vocabulary.entities):
        return True
    return (len(run) > 1 or phrase not in tags) and bool(_NAME_END.search(phrase))


def nearest_line(
    answerer: Answerer,
    scored: Scored,
    distance: np.ndarray,
    allowed: np.ndarray | None,
    exclude: Collection[str],
) -> int | None:
    """Of his lines spoken within SCENE_REACH characters of a place in the novel (`distance`, per exchange; inf in
    other chapters), long enough to say something, allowed and not yet said: the best-ranked, the nearest among
    equals; None when he says nothing there."""
    import numpy as np

    near = distance <= SCENE_REACH
    near &= np.asarray([len(ex.reply.text) >= SCENE_MIN_CHARS for ex in answerer.exchanges])
    if allowed is not None:
        near &= allowed
    candidates = [i for i in np.flatnonzero(near) if answerer.exchanges[i].reply.text.strip() not in exclude]
    if not candidates:
        return None
    return max(candidates, key=lambda i: (float(scored.scores[i]), -float(distance[i])))


def scene_line(
    answerer: Answerer, scored: Scored, query: str, allowed: np.ndarray | None, exclude: Collection[str]
) -> int | None:
    """For a question the book cannot answer outright that names a scene (`scene_phrases`): the line he speaks
    nearest to where the novel names it (within SCENE_REACH characters of its chapter), the best-ranked of those if
    any holds some of the question; None when the question names no scene or he says nothing there."""
    import numpy as np

    phrases = scene_phrases(query, answerer.vocabulary)
    if not phrases:
        return None
    chapters = {ch.number: ch.text for ch in answerer.canon.novel.chapters}
    distance = np.full(len(answerer.exchanges), np.inf, dtype=np.float32)
    for phrase in phrases:
        first, last = answerer.vocabulary.episode((phrase,))
        for n in range(first, last + 1):
            text = chapters.get(n, "")
            at = [m.start() for m in re.finditer(re.escape(phrase), text)]
            if not at:
                continue
            marks = np.asarray(at, dtype=np.float32)
            for i in np.flatnonzero(answerer.chapters == n):
                distance[i] = min(distance[i], float(np.abs(marks - answerer.exchanges[i].reply.offset).min()))
    return nearest_line(answerer, scored, distance, allowed, exclude)


# --- the passage a question is about --------------------------------------------------------------------------------

PASSAGE_CHARS = 300  # the novel is read in windows of this many characters …
PASSAGE_STEP = 150  # … overlapping by half
PASSAGE_MIN_SCORE = 12.0  # BM25: above the best modern calibration question (11.66; `calibrate.py --passages`)


class Passages:
    """Where in the novel a question's words stand together (车迟国 + 坐禅 + 咬 → the night the 臭虫 bit him in
    chapter 46): BM25 over windows of PASSAGE_CHARS characters every PASSAGE_STEP, scored from the positions of
    the query's character bigrams alone (a few str searches per query; no index to build or keep)."""

    K1 = 1.5  # BM25's term-frequency saturation (the windows are all of one length: no length normalisation)

    def __init__(self, canon: Canon) -> None:
        self.chapters = [(ch.number, ch.text) for ch in canon.novel.chapters]
        self.windows = sum(max(1, -(-len(text) // PASSAGE_STEP)) for _, text in self.chapters)

    def best(self, bigrams: Sequence[str]) -> tuple[int, int, float] | None:
        """(chapter, start offset, score) of the window where the bigrams stand together best; None when none does."""
        total: dict[tuple[int, int], float] = {}
        for gram in dict.fromkeys(bigrams):
            hits: dict[tuple[int, int], int] = {}
            for number, text in self.chapters:
                at = text.find(gram)
                while at >= 0:
                    for w in range(max(0, (at - PASSAGE_CHARS) // PASSAGE_STEP + 1), at // PASSAGE_STEP + 1):
                        hits[(number, w)] = hits.get((number, w), 0) + 1
                    at = text.find(gram, at + 1)
            if not hits:
                continue
            idf = math.log(1 + (self.windows - len(hits) + 0.5) / (len(hits) + 0.5))
            for key, tf in hits.items():
                total[key] = total.get(key, 0.0) + idf * tf * (self.K1 + 1) / (tf + self.K1)
        if not total:
            return None
        (number, w), score = max(total.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
        return number, w * PASSAGE_STEP, score


def _bigrams(text: str) -> list[str]:
    return [run[i : i + 2] for run in _WORD.findall(text) if not run.isascii() for i in range(len(run) - 1)]


def _held(owner: object, name: str, build: Callable[[], object]):
    """`owner`'s `name` attribute, built by `build` the first time (under the cache lock: once, whatever threads)."""
    found = owner.__dict__.get(name)
    if found is None:
        with _CACHE_LOCK:
            if name not in owner.__dict__:
                owner.__dict__[name] = build()
            found = owner.__dict__[name]
    return found


def passages(canon: Canon) -> Passages:
    """The novel's `Passages`, built once per canon (held on the canon object)."""
    return _held(canon, "_passages", lambda: Passages(canon))


def question_bigrams(scored: Scored) -> list[str]:
    """The character bigrams of the question's content words (not its question words, 你, or function words)."""
    content = [t.text for t in scored.terms if t.kind not in ("cue", "you") and not t.text.isascii()]
    return sorted({g for w in content for g in _bigrams(w)})


def passage_line(
    answerer: Answerer, scored: Scored, allowed: np.ndarray | None, exclude: Collection[str]
) -> int | None:
    """For a question the book cannot answer outright: the passage of the novel where its words stand together
    (`Passages`), when it stands out (score at least PASSAGE_MIN_SCORE), and his line spoken nearest to it (within
    SCENE_REACH characters of its chapter; the best-ranked of those if any holds some of the question); None
    otherwise."""
    import numpy as np

    found = passages(answerer.canon).best(question_bigrams(scored))
    if found is None or found[2] < PASSAGE_MIN_SCORE:
        return None
    chapter, start, _ = found
    middle = start + PASSAGE_CHARS // 2
    offsets = np.asarray([ex.reply.offset for ex in answerer.exchanges], dtype=np.float32)
    distance = np.where(answerer.chapters == chapter, np.abs(offsets - middle), np.inf)
    return nearest_line(answerer, scored, distance, allowed, exclude)


# --- the lines a question's story surrounds -------------------------------------------------------------------------

SURROUNDINGS_BEFORE = 400  # characters of the novel before his line (what happened, who said what) …
SURROUNDINGS_AFTER = 100  # … and after it, read as the line's surroundings
SURROUNDINGS_MIN_SCORE = 12.0  # BM25: above the best modern calibration question (11.83; `calibrate.py --passages`)
SURROUNDINGS_OWN = 0.3  # how much the line's own match counts, next to its surroundings' (each scaled to its best)


class Surroundings:
    """The novel around each of a character's lines (SURROUNDINGS_BEFORE characters before it, SURROUNDINGS_AFTER
    after, within its chapter), for BM25 over the question's character bigrams: where the story the question tells
    stands around a line, in the narration and the others' speeches (大师兄 + 石头 + 人头 → his line right after it).
    Scored from the positions of each bigram in the novel (one search per bigram; no index to build or keep)."""

    def __init__(self, answerer: Answerer) -> None:
        import numpy as np

        self.novel, base = _held(answerer.canon, "_joined_novel", lambda: _joined(answerer.canon))
        lo, hi = [], []
        for ex in answerer.exchanges:
            at, length = base[ex.chapter]
            lo.append(at + max(0, ex.reply.offset - SURROUNDINGS_BEFORE))
            hi.append(at + min(length, ex.reply.offset + len(ex.reply.text) + SURROUNDINGS_AFTER))
        self.lo, self.hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
        lengths = np.maximum(self.hi - self.lo, 1).astype(np.float32)
        self._norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths / float(lengths.mean() if len(lengths) else 1.0))

    def scores(self, bigrams: Sequence[str]) -> np.ndarray:
        """The BM25 score of each line's surroundings for the bigrams (each counted where it occurs)."""
        import numpy as np

        total = np.zeros(len(self.lo), dtype=np.float32)
        for gram in dict.fromkeys(bigrams):
            at = np.asarray([m.start() for m in re.finditer(re.escape(gram), self.novel)], dtype=np.int64)
            if not at.size:
                continue
            tf = (np.searchsorted(at, self.hi - len(gram), side="right") - np.searchsorted(at, self.lo)).astype(
                np.float32
            )
            df = int(np.count_nonzero(tf))
            idf = math.log(1 + (len(tf) - df + 0.5) / (df + 0.5))
            total += idf * tf * (BM25_K1 + 1) / (tf + self._norm)
        return total


def _joined(canon: Canon) -> tuple[str, dict[int, tuple[int, int]]]:
    """The novel's chapters as one text (NUL between them), and each chapter's (start, length) in it."""
    chapters = [(ch.number, ch.text) for ch in canon.novel.chapters]
    base, start = {}, 0
    for number, text in chapters:
        base[number] = (start, len(text))
        start += len(text) + 1
    return "\x00".join(text for _, text in chapters), base


def surroundings_grams(scored: Scored) -> list[str]:
    """What of the question is looked for around his lines: the bigrams of its content words (`question_bigrams`)
    and its one-character content words (绑, 咬, 打: the deed, which no bigram holds)."""
    singles = [t.text for t in scored.terms if t.kind == "single" and not t.text.isascii()]
    return question_bigrams(scored) + sorted(set(singles))


def surroundings(answerer: Answerer) -> Surroundings:
    """The `Surroundings` of an Answerer's lines, built once (held on the Answerer)."""
    return _held(answerer, "_surroundings", lambda: Surroundings(answerer))


def surroundings_line(
    answerer: Answerer,
    scored: Scored,
    allowed: np.ndarray | None,
    exclude: Collection[str],
    prefer: np.ndarray | None = None,
) -> int | None:
    """For a question the book cannot answer outright: his line whose surroundings in the novel hold the most of
    the question (`Surroundings`), when the best of them stands out (at least SURROUNDINGS_MIN_SCORE), with his
    line's own match counting SURROUNDINGS_OWN as much; only lines long enough to say something (SCENE_MIN_CHARS),
    allowed and not yet said. `prefer`: a weight per line (a scene's chapters) the ranking is multiplied by. None
    when no line's surroundings stand out."""
    import numpy as np

    around = surroundings(answerer).scores(surroundings_grams(scored))
    ok = np.asarray(
        [len(ex.reply.text) >= SCENE_MIN_CHARS and ex.reply.text.strip() not in exclude for ex in answerer.exchanges],
        dtype=bool,
    )
    if allowed is not None:
        ok &= allowed
    if not ok.any():
        return None
    top = float(around[ok].max())
    if top < SURROUNDINGS_MIN_SCORE:
        return None
    own = float(scored.scores.max())
    ranking = around / top + SURROUNDINGS_OWN * (scored.scores / own if own > 0 else scored.scores)
    if prefer is not None:
        ranking = ranking * prefer
    return int(np.argmax(np.where(ok, ranking, -np.inf)))
