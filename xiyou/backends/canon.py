"""The offline backend: a character answers with its own line from the novel, citing the chapter.

No model, no server. The question is the last thing said to the character, in the speaker's own words: the
room view's `名字：` labels, the person's name (`GenerationSettings.person`, which the room sets) and forms of
address (施主, 师父, 大圣 …) are stripped (`xiyou.names.strip_addressing`), so the person's name never changes a
reply. The reply is the character's canon line whose context (what was said to him in the novel) best matches
the question; a question about himself (你有什么本事？) gets his own line on the topic (`xiyou.canon.about`); when
the book does not answer outright (relevance under `xiyou.canon.answers.DEFLECT_BELOW`), a question about the story
gets his line from its scene (`xiyou.canon.answers`), and any other one of his own deflection lines (he does not
know, waves it off, changes the subject).

Deterministic: the same conversation always gets the same reply; a line already said in the conversation is
never said again. With `max_chapter`, only lines from chapters up to it are used. The line streams at
`chars_per_second` (default `XIYOU_CANON_CPS`, else DEFAULT_CPS; 0: at once, clause by clause), after its
`Citation` (chapter, and to whom the line was said in the novel: data, never text), which comes first so that a
reply cut short still says where it is from.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence

from xiyou.backends.base import BackendError, Citation, GenerationSettings, Message, Piece, validate_messages
from xiyou.character import Character

#: Default pace of a canon reply, in characters per second (about typing speed; reads comfortably).
DEFAULT_CPS = 15.0
#: How much more a line from the preferred chapters (a scene's) scores than any other.
PREFER_BOOST = 3.0
CPS_VAR = "XIYOU_CANON_CPS"
_CLAUSE_END = re.compile(r"(?<=[，。！？；：、,.!?;…])")
_LABEL = re.compile(r"^\s*([^：:\n]{1,20})[：:]")
_FILLER = re.compile(r"^\s*（[^）]*）\s*$")  # the room view's （请接着说。） and the like


_OPENING_CLAUSE = re.compile(r"^([^，,。！!？?；;、…：:\n]{1,8})[，,！!]")
_CALL_PARTICLES = re.compile(r"[啊呀哇哪呢哟]+$")
#: How the four call someone outside the four at the start of a line (陛下，… 老施主，… 泼怪！…): such a line was not
#: said to one of the four who happened to speak just before it.
OUTSIDERS_CALLED = frozenset(
    """公公 老公公 老官儿 老儿 老施主 施主 女施主 女菩萨 菩萨 陛下 大王 老禅师 院主 老院主 列位 众位 婆婆 妈妈
    娘子 姐姐 先生 长官 泼怪 泼魔 孽畜 妖精 妖怪""".split()
)


def citation_of(exchange, canon) -> Citation:
    """The chapter of an exchange of `canon` and to whom its line was said: the one of the four his line opens by
    calling (`悟空，你看那里是甚么去处？`), else the context's speaker when he is not one of the four, else whom it
    opens by calling outside the four (`陛下，…`: 对陛下说), else the context's speaker, when known."""
    from xiyou import names
    from xiyou.canon import UNKNOWN

    called = called_by_name(exchange.reply.text, exchange.character)
    # … once the one called is in the story: 悟空's 师父 of chapters 1-2 is 菩提祖师, not 三藏
    if called is not None and canon.exchanges(called)[0].chapter <= exchange.chapter:
        return Citation(exchange.chapter, names.display_name(called))
    context = exchange.context
    if context is not None and context.speaker not in (UNKNOWN, *names.CHARACTER_IDS):
        return Citation(exchange.chapter, context.name or context.speaker)  # 老者, then his 公公，…: the same one
    opening = _opening_call(exchange.reply.text)
    if opening is not None and opening[0] in OUTSIDERS_CALLED:  # 三藏's 陛下，… right after 八戒 spoke: to the king
        return Citation(exchange.chapter, opening[0])
    if context is not None and context.speaker in names.CHARACTER_IDS:
        return Citation(exchange.chapter, names.display_name(context.speaker))
    return Citation(exchange.chapter, None)


def called_by_name(line: str, speaker: str) -> str | None:
    """The id of the one of the four (not `speaker`) whom `line` opens by calling, in a clause that only calls him
    (`悟空，…`, `呆子！…`, `沙和尚，…`); None when it opens otherwise or the call names no one of them alone."""
    from xiyou import names
    from xiyou.character import get_character
    from xiyou.room.mentions import mentioned

    opening = _opening_call(line)
    if opening is None:
        return None
    word, clause = opening
    own = [cid for cid, forms in get_character(speaker).calls.items() if word in forms]  # 八戒's 哥哥: 悟空
    if own:
        return own[0]
    if names.strip_addressing(clause):  # the clause says more than a name
        return None
    others = [get_character(cid) for cid in names.CHARACTER_IDS if cid != speaker]
    called = mentioned(word, others)
    return called[0] if len(called) == 1 else None


def _opening_call(line: str) -> tuple[str, str] | None:
    """(the word, the whole clause with its mark) of a short clause opening `line` that may only call someone
    (`悟空，`, `哥啊，`: 哥), or None."""
    m = _OPENING_CLAUSE.match(line.strip())
    return (_CALL_PARTICLES.sub("", m.group(1)), m.group(0)) if m else None


def default_cps() -> float:
    """`XIYOU_CANON_CPS` (characters per second; 0 = no pacing), else DEFAULT_CPS."""
    value = os.environ.get(CPS_VAR, "").strip()
    if not value:
        return DEFAULT_CPS
    try:
        cps = float(value)
    except ValueError:
        raise BackendError(f"{CPS_VAR}={value!r} is not a number; set characters per second, 0 for no pacing") from None
    if cps < 0:
        raise BackendError(f"{CPS_VAR}={value!r} is negative; set characters per second, 0 for no pacing")
    return cps


def question_of(messages: Sequence[Message], person: str | None = None) -> str:
    """The last thing said to the character, in the speaker's own words (labels, names, forms of address gone).

    In a room view the last user message may hold several speakers' lines (`名字：…` blocks): the last block is
    the question (the person's line, or another member's during banter). Filler lines are skipped. `person`: the
    name the person goes by (`GenerationSettings.person`, set by the room), left out like a form of address."""
    from xiyou import names

    blocks = _last_blocks(messages, person)
    return names.strip_addressing(blocks[-1], person) if blocks else ""


def persons_words(messages: Sequence[Message], person: str | None) -> str | None:
    """What the person said since the character last spoke, in their own words, when someone else spoke after it
    (a room: `施主：大家好` then `孙悟空：…`); None otherwise. A greeting or goodbye to the room is answered by each
    member in turn, not by the next member to the one before him."""
    from xiyou import names

    if not person:
        return None
    blocks = _last_blocks(messages, person)
    said = [b for b in blocks[:-1] if (label := _LABEL.match(b)) and label.group(1).strip() == person]
    return names.strip_addressing(said[-1], person) if said else None


def _last_blocks(messages: Sequence[Message], person: str | None) -> list[str]:
    """The speakers' blocks (`名字：…`) of the last user message that is not a filler line."""
    from xiyou import names

    for m in reversed(messages):
        if m["role"] != "user" or _FILLER.match(m["content"]):
            continue
        blocks: list[str] = []
        for block in m["content"].split("\n\n"):
            label = _LABEL.match(block)
            if not blocks or (label and (label.group(1).strip() == person or names.resolve(label.group(1)))):
                blocks.append(block)
            else:
                blocks[-1] += "\n\n" + block
        return blocks
    return []


def _pieces(text: str, paced: bool) -> list[str]:
    """The clauses of a line; when paced, in pieces of at most 3 characters (smooth at typing speed)."""
    clauses = [p for p in _CLAUSE_END.split(text) if p] or [text]
    if not paced:
        return clauses
    return [c[i : i + 3] for c in clauses for i in range(0, len(c), 3)]


class CanonBackend:
    """Backend whose replies are the character's own lines from the novel (see the module doc)."""

    offline = True  # no model: `is_offline`

    #: One line for pages to show beside an offline character (what this mode is).
    notice = (
        "离线原著模式：角色只用《西游记》原著里自己说过的话作答，不会生成新话 · "
        "Offline: characters answer with their own lines from the novel."
    )

    def __init__(
        self,
        character: Character,
        canon=None,
        *,
        max_chapter: int | None = None,
        chars_per_second: float | None = None,
        prefer_chapters: range | None = None,
    ) -> None:
        from xiyou.canon import CHARACTER_IDS

        if character.id not in CHARACTER_IDS:
            raise BackendError(f"the canon has no lines for {character.id!r}; it has: {', '.join(CHARACTER_IDS)}")
        if max_chapter is not None and not 1 <= max_chapter <= 100:
            raise BackendError(f"max_chapter must be within 1..100, got {max_chapter}")
        self.character = character
        self._canon = canon
        self.max_chapter = max_chapter
        #: A scene's chapters: lines from them score PREFER_BOOST times higher (a room set in a scene).
        self.prefer_chapters = prefer_chapters
        self.chars_per_second = default_cps() if chars_per_second is None else max(float(chars_per_second), 0.0)
        upto = f", chapters 1-{max_chapter}" if max_chapter is not None else ""
        self.label = f"canon: {character.name}'s lines from 《西游记》{upto}"

    @property
    def canon(self):
        if self._canon is None:
            from xiyou.canon import NovelError, get_canon

            try:
                self._canon = get_canon()
            except NovelError as e:
                raise BackendError(f"the offline canon backend needs the novel: {e}") from None
        return self._canon

    def choose(self, messages: Sequence[Message], person: str | None = None):
        """The exchange to answer with (deterministic); `last_relevance` says how well it matched (0..1). `person`:
        the name the person goes by (never part of the question)."""
        from xiyou import names
        from xiyou.canon import about, answers, smalltalk

        validate_messages(messages)
        canon = self.canon
        cid = self.character.id
        exchanges = canon.exchanges(cid)
        if not exchanges:
            raise BackendError(f"the canon has no lines for {self.character.name}; check the novel file")
        query = question_of(messages, person)
        said = {m["content"].strip() for m in messages if m["role"] == "assistant"}
        answerer = answers.answerer(canon, cid)

        def is_topic(text: str) -> bool:  # names a person, place or thing of the novel (你好，师父被妖怪抓走了！);
            terms = answers.query_terms(text, answerer.vocabulary)  # calling one of the four (hi 八戒 …) is not one
            return any(t.kind == "entity" and names.resolve(t.text) is None for t in terms)

        act, rest = smalltalk.act_of(query, is_topic) if query else ("greeting", "")  # only called (猴哥！)
        if act is None and (theirs := persons_words(messages, person)):  # 大家好 to the room, answered by the
            act = smalltalk.act_of(theirs, is_topic)[0]  # member before him: he greets too
        if act is not None:  # 你好, 谢谢, 再见, 你是谁: his own line for it, else one of his shrugs
            self.last_relevance = 1.0
            found = smalltalk.reply(canon, self.character, act, said, self.max_chapter)
            if found is None:
                self.last_relevance = 0.0
                found = answers.pick_deflection(answers.deflections(canon, cid), act, said, self.max_chapter)
            if found is not None:
                return found
        else:
            query = rest
        # a question about himself (你有什么本事？ 你在天上做什么官？ 怎样修行？): his own line on the topic, unless the
        # book put him this very question
        topic = about.topic_of(query, lambda text: answers.names_an_episode(text, answerer.vocabulary))
        if topic is not None and answerer.asked_in_book(query) is None:
            found = about.reply(canon, self.character, topic, said, self.max_chapter)
            if found is not None:
                self.last_relevance = 1.0  # as for small talk: his own line for it
                return found
        allowed = answerer.mask(self.max_chapter)
        scored = answerer.score(query)
        boost = None
        if self.prefer_chapters is not None:
            import dataclasses

            import numpy as np

            start, stop = self.prefer_chapters.start, self.prefer_chapters.stop
            inside = (answerer.chapters >= start) & (answerer.chapters < stop)
            boost = np.where(inside, PREFER_BOOST, 1.0).astype(scored.scores.dtype)
            scored = dataclasses.replace(scored, scores=scored.scores * boost)
        rules = (  # first that finds a line wins
            lambda: answers.best(scored, exchanges, allowed, said, answers.DEFLECT_BELOW),  # the book answers
            lambda: answers.episode_line(answerer, scored, allowed, said),  # a question about one episode
            lambda: answers.surroundings_line(answerer, scored, allowed, said, boost),  # the story around a line
            lambda: answers.scene_line(answerer, scored, query, allowed, said),  # a question naming a scene
            lambda: answers.passage_line(answerer, scored, allowed, said),  # a passage the question tells
        )
        for rule in rules:
            i = rule()
            if i is not None:
                self.last_relevance = float(scored.relevance[i])
                return exchanges[i]
        weak = answers.best(scored, exchanges, allowed, said)
        self.last_relevance = float(scored.relevance[weak]) if weak is not None else 0.0
        found = answers.pick_deflection(answers.deflections(canon, cid), query, said, self.max_chapter)
        if found is not None:
            return found
        if weak is not None:  # no deflection left: the best match whatever its relevance
            return exchanges[weak]
        pool = [ex for ex in exchanges if self.max_chapter is None or ex.chapter <= self.max_chapter]
        found = answers.pick_deflection(pool, query, said, None)  # any line not yet said, by the query's hash
        if found is None:
            raise BackendError(f"{self.character.name} has no line left to say from chapters 1-{self.max_chapter}")
        return found

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[Piece]:
        try:
            exchange = self.choose(messages, settings.person)
        except ValueError as e:
            raise BackendError(f"cannot answer: {e}") from None
        cancel = cancel or threading.Event()
        if cancel.is_set():
            return
        yield citation_of(exchange, self.canon)  # first: a reply cut short keeps it
        cps = self.chars_per_second
        budget = settings.max_new_tokens  # about one token per Chinese character
        for delta in _pieces(exchange.reply.text, paced=cps > 0):
            if cancel.is_set():
                return
            yield delta
            budget -= len(delta)
            if budget <= 0:
                break
            if cps > 0 and cancel.wait(len(delta) / cps):
                return
