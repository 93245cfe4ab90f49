"""Future-knowledge leaks: does a reply at "after chapter N" know what only happens later?

A reply **leaks** when
- it cites a chapter after N: a `Citation` (`xiyou.backends.base`) with `chapter > N`, or a chapter reference
  in its text (`第三十回`, `第30回`) after N; or
- it names a person, place or thing whose **first mention** in the novel is after chapter N.

The first-mention table (`first_mentions()`) is built from the novel: for each name, the first chapter whose
heading or text contains it. The names are
- the canon's speakers: every speaker the attribution found with at least `MIN_SPEAKER_LINES` lines, except
  role words (`GENERIC_SPEAKERS`: 国王, 公主, 老魔 … name different people in different chapters);
- the four pilgrims' names and forms from their character files (八戒 first appears in chapter 19, 唐僧 in 14);
- `CURATED` below: people, monsters, places and things of the journey (白骨夫人, 火焰山, 芭蕉扇, 人参果 …);
- `POPULAR`: names readers use that the novel does not (白骨精, 女儿国, 小白龙), mapped to the novel's own name,
  whose first mention they take.

The rule is the novel's: 火焰山 is first named in chapter 40 (红孩儿's story), 芭蕉扇 in 34 (one of 金角's
treasures), 牛魔王 in 3 (悟空's sworn brother), so naming them after those chapters is no leak.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable
from typing import Literal

from xiyou.canon.loader import parse_number

MIN_SPEAKER_LINES = 3

#: Speakers the attribution names by a role, not a name: skipped (they are everyday words in a reply).
GENERIC_SPEAKERS = frozenset(
    """
    员外 小王子 国丈 三怪 三魔 女王 太师 僧官 老翁 二魔 公主 老魔 驿丞 驸马 童儿 女怪 寡妇 老王 老婆 太公 女子
    老怪 老妖 群妖 院主 魔头 黑汉 公公 禅师 国王 太监 多官 王子 渔翁 那怪 渔人 小姐 和尚 婆婆 丞相 先生 众僧
    妇人 女儿 老僧 皇帝 众神 怪物 二神 道人 娘娘 罗汉 天王 太子 老儿 妖怪 龙王 老龙 龙婆 十王 众怪 判官 老者
    小龙 老人 帝君 天师 妖王 星官 小妖 魔王 众妖 妖魔 妖精 洞主 道士 众猴 樵夫 童子 仙女 仙童 祖师 菩萨 樵子
    阎王 老母 群猴 天尊 功曹 揭谛 土地 大仙 真君 金星 明月 清风 怪 魔 妖 佛祖 众 二童 长老 徒弟
    """.split()
)

#: People, monsters, places and things of the journey (each must occur in the novel; a test checks it).
CURATED: tuple[str, ...] = tuple(
    """
    唐僧 唐三藏 玄奘 猪八戒 八戒 悟能 猪刚鬣 沙僧 沙和尚 悟净 沙悟净 卷帘大将 天蓬元帅 白龙马
    白骨夫人 尸魔 红孩儿 圣婴大王 牛魔王 铁扇公主 罗刹女 铁扇仙 玉面公主 金角大王 银角大王 黄袍怪 百花羞 黄风怪
    黑熊精 熊罴怪 镇元子 镇元大仙 灵感大王 六耳猕猴 黄眉大王 黄眉老佛 赛太岁 金圣宫 蜘蛛精 百眼魔君 蝎子精
    九头虫 老鼠精 独角兕 兕大王 虎力大仙 鹿力大仙 羊力大仙 九灵元圣 弥勒 毗蓝婆 寇员外 乌巢禅师 金池长老 高太公
    刘伯钦 陈光蕊 魏征 泾河龙王 袁守诚 哪吒 太白金星 菩提祖师 混世魔王 弼马温 齐天大圣 观音 如来 斗战胜佛
    旃檀功德佛 净坛使者 金身罗汉 八部天龙 黄狮精 豹子精
    花果山 水帘洞 方寸山 斜月三星洞 五行山 两界山 长安 鹰愁涧 观音院 黑风山 高老庄 云栈洞 福陵山 浮屠山 黄风岭
    流沙河 万寿山 五庄观 白虎岭 宝象国 碗子山 波月洞 平顶山 莲花洞 乌鸡国 宝林寺 火云洞 枯松涧 黑水河 车迟国
    通天河 陈家庄 子母河 西梁女国 琵琶洞 毒敌山 火焰山 芭蕉洞 翠云山 积雷山 祭赛国 荆棘岭 木仙庵 小雷音 驼罗庄
    稀柿衕 朱紫国 麒麟山 盘丝洞 盘丝岭 濯垢泉 黄花观 狮驼岭 狮驼国 比丘国 小子城 无底洞 陷空山 镇海寺 灭法国
    隐雾山 凤仙郡 玉华州 豹头山 金平府 青龙山 天竺国 铜台府 灵山 雷音寺 凌云渡 玉真观
    金箍棒 紧箍 紧箍咒 定心真言 锦襕袈裟 九环锡杖 人参果 芭蕉扇 紫金红葫芦 羊脂玉净瓶 幌金绳 七星剑 紫金铃
    金刚琢 金铙 人种袋 三昧真火 定风丹 九齿钉钯 降妖宝杖 心经 定风珠 照妖镜
    """.split()
)

#: Names readers use that the novel does not -> the novel's own name (whose first mention they take).
POPULAR: dict[str, str] = {
    "白骨精": "白骨夫人",
    "女儿国": "西梁女国",
    "小白龙": "白龙马",
    "青牛精": "独角兕",
    "黄眉怪": "黄眉大王",
    "金鼻白毛老鼠": "老鼠精",
}

_CHAPTER_REF = re.compile(r"第\s*([零〇○一二两三四五六七八九十百0-9０-９]+)\s*回")

LeakKind = Literal["chapter", "name"]


@dataclasses.dataclass(frozen=True)
class Leak:
    """One piece of future knowledge in a reply: a chapter cited, or a name first mentioned in `chapter`."""

    kind: LeakKind
    text: str  # what the reply said: "第三十回", "白骨夫人"
    chapter: int  # the chapter it belongs to (> the conversation's chapter)

    def describe(self) -> str:
        from xiyou.canon.loader import chapter_ref

        if self.kind == "chapter":
            return f"cites {self.text} (after the conversation's chapter)"
        return f"names {self.text}, first mentioned in {chapter_ref(self.chapter)}"


def first_mention_table(novel, names: Iterable[str]) -> dict[str, int]:
    """name -> the first chapter of `novel` whose heading or text contains it (names never found are left out)."""
    chapters = [(c.number, f"{c.title}\n{c.text}") for c in novel.chapters]
    table: dict[str, int] = {}
    for name in dict.fromkeys(names):
        for number, text in chapters:
            if name in text:
                table[name] = number
                break
    return table


def table_names(canon) -> list[str]:
    """Every name the table covers (see the module doc), before looking them up."""
    from collections import Counter

    from xiyou.character import load_characters

    counts = Counter(u.speaker for u in canon.utterances)
    speakers = [s for s, n in counts.items() if n >= MIN_SPEAKER_LINES and len(s) >= 2 and not s.isascii()]
    speakers = [s for s in speakers if s not in GENERIC_SPEAKERS]
    pilgrims = [n for c in load_characters().values() for n in c.names if len(n) >= 2]
    return [*speakers, *pilgrims, *CURATED]


@functools.cache
def _table_for(canon) -> dict[str, int]:
    table = first_mention_table(canon.novel, table_names(canon))
    for popular, own in POPULAR.items():
        if own in table:
            table.setdefault(popular, table[own])
    return table


def first_mentions(canon=None) -> dict[str, int]:
    """The first-mention table of `canon` (default `get_canon()`): name -> chapter. Built once per canon."""
    if canon is None:
        from xiyou.canon import get_canon

        canon = get_canon()
    return _table_for(canon)


def leaks(
    reply: str,
    chapter: int | None,
    citations: Iterable[object] = (),
    table: dict[str, int] | None = None,
    ignore: Iterable[str] = (),
) -> list[Leak]:
    """The future knowledge in `reply` for a conversation set to after `chapter` ([] when chapter is None).

    `citations`: the reply's `Citation`s (anything with a `.chapter`); `table`: a first-mention table
    (default `first_mentions()`); `ignore`: names not to count (e.g. the labels a prompt gives its speaker)."""
    if chapter is None:
        return []
    found: list[Leak] = []
    for c in citations:
        number = getattr(c, "chapter", None)
        if isinstance(number, int) and number > chapter:
            from xiyou.canon.loader import chapter_ref

            found.append(Leak("chapter", chapter_ref(number), number))
    for m in _CHAPTER_REF.finditer(reply):
        try:
            number = parse_number(m.group(1))
        except (ValueError, KeyError):
            continue
        if number > chapter and not any(lk.kind == "chapter" and lk.chapter == number for lk in found):
            found.append(Leak("chapter", m.group(0), number))
    table = first_mentions() if table is None else table
    taken = [False] * len(reply)
    skip = set(ignore)
    for name in sorted((n for n, ch in table.items() if ch > chapter and n not in skip), key=len, reverse=True):
        start = reply.find(name)
        while start >= 0:
            span = range(start, start + len(name))
            if not any(taken[i] for i in span):
                for i in span:
                    taken[i] = True
                if not any(lk.kind == "name" and lk.text == name for lk in found):
                    found.append(Leak("name", name, table[name]))
            start = reply.find(name, start + 1)
    return found


def leak_figures(records: Iterable[dict], chapter: int | None, table: dict[str, int] | None = None) -> dict:
    """Per character: how many replies leak at `chapter`, the rate, the names and chapters leaked most, and a few
    examples. `records` are `pipeline.eval` reply records (`character`, `text`, optional `citation`)."""
    from collections import Counter

    from xiyou.backends.base import Citation

    out: dict[str, dict] = {}
    if chapter is None:
        return out
    table = first_mentions() if table is None else table
    for r in records:
        row = out.setdefault(r["character"], {"replies": 0, "leaking": 0, "what": Counter(), "examples": []})
        cited = [Citation(int(r["citation"]["chapter"]))] if r.get("citation") else []
        found = leaks(r["text"], chapter, cited, table=table)
        row["replies"] += 1
        if found:
            row["leaking"] += 1
            row["what"].update(lk.text for lk in found)
            if len(row["examples"]) < 3:
                row["examples"].append(
                    {"question": r.get("question"), "text": r["text"][:200], "leaks": [lk.describe() for lk in found]}
                )
    for row in out.values():
        row["rate"] = row["leaking"] / row["replies"] if row["replies"] else 0.0
        row["what"] = dict(row["what"].most_common(10))
    return out
