"""`xiyou canon stats|export|search`: the novel as data, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import click

NOVEL_OPTION = click.option(
    "--novel",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The novel's text (any common encoding). Default: $XIYOU_NOVEL, else ../shared/data/xiyouji.txt.",
)


def _canon_or_exit(novel: Path | None):
    from xiyou.canon import NovelError, get_canon

    try:
        return get_canon(novel)
    except NovelError as e:
        raise click.ClickException(str(e)) from None


@click.group("canon")
def canon_cmd() -> None:
    """The novel as data: attributed lines, training records, search."""


@canon_cmd.command("stats")
@NOVEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def stats_cmd(novel: Path | None, as_json: bool) -> None:
    """Chapters, utterances, lines attributed to each character, unknown share."""
    from xiyou.character import load_characters

    canon = _canon_or_exit(novel)
    stats = canon.stats()
    if as_json:
        click.echo(json.dumps(stats, ensure_ascii=False, indent=2))
        return
    characters = load_characters()
    click.echo(
        f"novel:        {canon.novel.path} ({stats['encoding']}"
        f"{', converted from traditional' if canon.novel.converted_from_traditional else ''})"
    )
    click.echo(f"chapters:     {stats['chapters']}")
    if canon.novel.missing_chapters:
        click.echo(f"warning:      {canon.novel.missing_note()}", err=True)
    click.echo(f"utterances:   {stats['utterances']}")
    for cid, count in stats["per_character"].items():
        c = characters[cid]
        with_context = sum(1 for ex in canon.exchanges(cid) if ex.context is not None)
        click.echo(f"  {c.emoji} {c.name} ({cid}): {count} lines, {with_context} with a context")
    click.echo(f"other named:  {stats['other_speakers']}")
    click.echo(f"unknown:      {stats['unknown']} ({stats['unknown_share']:.1%})")


@canon_cmd.command("export")
@NOVEL_OPTION
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for <id>.jsonl (XTuner records) and utterances.jsonl.",
)
@click.option("--character", "ids", multiple=True, help="Only these character ids (repeatable). Default: all four.")
def export_cmd(novel: Path | None, out_dir: Path, ids: tuple[str, ...]) -> None:
    """Write each character's XTuner conversation records, and every attributed utterance."""
    from tqdm import tqdm

    from xiyou.canon import CHARACTER_IDS
    from xiyou.io import write_jsonl_atomic

    for cid in ids:
        if cid not in CHARACTER_IDS:
            raise click.BadParameter(
                f"unknown character {cid!r}; valid ids: {', '.join(CHARACTER_IDS)}", param_hint="--character"
            )
    canon = _canon_or_exit(novel)
    for cid in tqdm(ids or CHARACTER_IDS, desc="export", unit="character", disable=None):
        records = canon.records(cid)
        write_jsonl_atomic(out_dir / f"{cid}.jsonl", records)
        click.echo(f"{out_dir / f'{cid}.jsonl'}: {len(records)} records", err=True)
    rows = (
        {"id": u.id, "chapter": u.chapter, "offset": u.offset, "speaker": u.speaker, "name": u.name, "text": u.text}
        for u in canon.utterances
    )
    write_jsonl_atomic(out_dir / "utterances.jsonl", rows)
    click.echo(f"{out_dir / 'utterances.jsonl'}: {len(canon.utterances)} utterances", err=True)


@canon_cmd.command("search")
@click.argument("character_id", metavar="ID")
@click.argument("query")
@NOVEL_OPTION
@click.option("-k", default=5, show_default=True, help="How many exchanges.")
def search_cmd(character_id: str, query: str, novel: Path | None, k: int) -> None:
    """The character's canon exchanges that best match QUERY."""
    from xiyou.character import CharacterError, get_character

    try:
        character = get_character(character_id)
    except CharacterError as e:
        raise click.BadParameter(str(e), param_hint="ID") from None
    canon = _canon_or_exit(novel)
    hits = canon.search(character.id, query, k=k)
    if not hits:
        click.echo("no match", err=True)
        return
    for hit in hits:
        ex = hit.exchange
        click.echo(f"[{hit.ref} · {ex.id} · score {hit.score:.2f}]")
        if ex.context is not None:
            click.echo(f"  {ex.context.name or '？'}：{ex.context.text}")
        click.echo(f"  {character.name}：{ex.reply.text}")
        click.echo("")
