"""Questions about himself, offline: 你的愿望是什么？ 你有什么本事？ 怎样修行？ get his own line on the topic.

A visitor asks a pilgrim about himself far more than the words of his lines can match: the novel's 三藏 never says
自豪 or 愿望, yet `总记菩萨之言，有十万八千里之远…` is what he would say of his proudest deed. So his character file
lists, per topic (`TOPICS`), a few of his lines in which he speaks of himself on it (`[about]`, by exchange id, best
first), and a question that asks about one of these topics — and names no episode of the novel, and no moment of
one — gets the first of them not yet said in the conversation, before any match of its words (which finds lines
that share a word with the question, such as 八戒's `前程！前程！…` for 你在天上的时候做什么官？).

A topic is told by its words (`topic_of`): the first topic of `TOPICS` whose cue the question holds. A question that
names an episode (五庄观, 通天河) or a moment (那天, 当时) is about the story, not about him: the story rules of
`xiyou.canon.answers` take it. Topics whose words run through questions about the story were tried and left out:
his master, his companions, demons and his fears (师父, 妖精, 怕 are in most story questions: `妖精把师父捉去了，你怕
不怕？`), where his line on the topic scored below what the story rules found (benchmarks/relevance/README.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xiyou.canon.core import Canon
    from xiyou.canon.exchanges import Exchange
    from xiyou.character import Character

#: The topics, most specific first, each with the words that ask about it. The names are the fields of the
#: character files' `[about]` table (`xiyou.character.About`).
TOPICS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(cue))
    for name, cue in (
        ("heaven", r"天宫|天庭|天界|天上|玉帝|天蓬|卷帘|齐天大圣|弼马温|贬下|被贬"),
        ("weapon", r"兵器|武器|金箍棒|如意棒|铁棒|钉钯|[这那的]钯|宝杖|禅杖|锡杖"),
        ("origin", r"你.{0,3}来历|出身|身世|家乡|老家|故乡|哪里人|你们?(?:是|原是)?从哪里?来|你.{0,2}哪儿来"
                   r"|以前是|过去是"),
        ("family", r"父母|爹娘|父亲|母亲|娘亲|(?<!出)家人|家庭|亲人|兄弟姐妹|妻子|老婆|媳妇|娘子|成家|想家"),
        ("name", r"名字|法号|法名|称号|外号|绰号|名号"),
        ("skills", r"本事|本领|法术|神通|变化|七十二变|三十六变|武艺|功夫|擅长|特长|优点|优势|长处"),
        ("character", r"缺点|毛病|弱点|短处|性格|脾气|个性|性子"),
        ("pride", r"自豪|骄傲|得意|成就|功劳"),
        ("wish", r"梦想|愿望|理想|心愿|取经以后|成佛以后"),
        ("food", r"爱吃|吃什么|吃饭|吃斋|吃素|吃荤|饭量|饿|食物|美食"),
        ("practice", r"修行|修炼|佛法|成佛|念经|经文|戒律|守戒|禅|慈悲|众生|善恶|出家"),
        ("hardship", r"困难|挫折|难处|辛苦|磨难|劫难|难题|挑战"),
        ("journey", r"取经|西天|旅途|一路上|冒险"),
    )
)
TOPIC_NAMES: tuple[str, ...] = tuple(name for name, _ in TOPICS)

#: A moment of the story: a question holding one asks what happened then, not about him (那天晚上你为什么怕？).
_MOMENT = re.compile(r"那时|那次|那回|当时|那天|那晚|那一[次回天晚]")
#: A Latin word (WiFi, Scrum, iPhone): a modern thing, which his shrugs answer best.
_LATIN = re.compile(r"[A-Za-z]{2,}")


_CLAUSE = re.compile(r"[^，,。.！!？?；;、…~～\s]+")
#: Someone else in the clause of the cue: the topic is his, not the character's (悟空说他本来就有法名).
_SOMEONE_ELSE = re.compile(r"[他她它]")


def topic_of(query: str, names_an_episode: Callable[[str], bool] | None = None) -> str | None:
    """The topic `query` asks about him (the first of `TOPICS` whose cue one of its clauses holds, a clause that
    speaks of no one else: 他, or one of the four by name), or None: none does, it names a moment of the story or a
    modern thing in Latin letters, or `names_an_episode(query)` (a place or being of one episode of the novel)."""
    if not query or _MOMENT.search(query) or _LATIN.search(query):
        return None
    clauses = [c for c in _CLAUSE.findall(query) if not (_SOMEONE_ELSE.search(c) or _names_one_of_the_four(c))]
    found = next((name for name, cue in TOPICS if any(cue.search(c) for c in clauses)), None)
    if found is None or (names_an_episode is not None and names_an_episode(query)):
        return None
    return found


def _names_one_of_the_four(clause: str) -> bool:
    """Whether `clause` names one of the four by an alias (悟空, 八戒; 师父, a form of address, does not count)."""
    from xiyou import names

    return any(alias in clause for cid in names.CHARACTER_IDS for alias in names.aliases(cid) if len(alias) >= 2)


def lines(canon: Canon, character: Character, topic: str) -> list[Exchange]:
    """His lines on `topic` as his character file lists them (ids this copy of the novel lacks are left out)."""
    from xiyou.canon import answers

    return answers.listed_exchanges(canon, character.id, getattr(character.about, topic))


def reply(
    canon: Canon, character: Character, topic: str, exclude: Collection[str], max_chapter: int | None
) -> Exchange | None:
    """His first line on `topic` not yet said in the conversation and from a chapter a reader has reached; None
    when he has none left (the other rules, then his shrugs, answer)."""
    from xiyou.canon import answers

    return answers.first_unsaid(lines(canon, character, topic), exclude, max_chapter)


def listed(character: Character) -> Sequence[tuple[str, str]]:
    """(topic, exchange id) of every line his character file lists, in order."""
    return [(topic, i) for topic in TOPIC_NAMES for i in getattr(character.about, topic)]
