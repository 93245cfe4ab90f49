"""The `xiyou` command. Subcommands mirror the package: characters, canon, room, chat, prompt."""

from __future__ import annotations

import json
import sys

import click

from xiyou.character import CharacterError, get_character, load_characters


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xiyou-roleplay", prog_name="xiyou")
def main() -> None:
    """西游 Roleplay: the four pilgrims of Journey to the West as chat characters."""


def _character_or_exit(character_id: str):
    try:
        return get_character(character_id)
    except CharacterError as e:
        raise click.BadParameter(str(e), param_hint="ID") from None


@main.command("characters")
def characters_cmd() -> None:
    """List the characters."""
    rows = [("id", "name", "title", "model_id")]
    rows += [(c.id, f"{c.emoji} {c.name}", c.title, f"{c.model_id}@{c.revision}") for c in load_characters().values()]
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell + " " * (w - _width(cell)) for cell, w in zip(row, widths)).rstrip())


def _width(text: str) -> int:
    """Display width in a terminal: CJK and emoji take two columns."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


@main.command("show")
@click.argument("character_id", metavar="ID")
def show_cmd(character_id: str) -> None:
    """Show one character: names, model, prompts, sample questions (and, with the novel, those it asks him)."""
    c = _character_or_exit(character_id)
    g = c.generation
    lines = [
        f"{c.emoji} {c.name} ({c.id}) · {c.title}",
        f"aliases:       {'、'.join(c.aliases)}",
        f"self refs:     {'、'.join(c.self_refs)}",
        f"model:         {c.model_id} @ {c.revision}",
        f"generation:    temperature={g.temperature} top_p={g.top_p} max_new_tokens={g.max_new_tokens} "
        f"repetition_penalty={g.repetition_penalty}",
        f"talkativeness: {c.talkativeness}",
        f"greeting:      {c.greeting}",
        "",
        "meta_instruction:",
        f"  {c.meta_instruction}",
        "",
        "sample questions:",
        *[f"  - {q}" for q in c.sample_questions],
    ]
    from xiyou.canon.answers import offline_suggestions

    asked = offline_suggestions(c)
    if asked:
        lines += ["", "asked of him in the novel (the offline suggestions; his line there answers):"]
        lines += [f"  - {q}" for q in asked]
    click.echo("\n".join(lines))


@main.command("card")
@click.argument("character_id", metavar="ID")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
def card_cmd(character_id: str, out: str | None) -> None:
    """Export a character as a Character Card V2 JSON (SillyTavern and others import it)."""
    from xiyou.card import character_card

    text = json.dumps(character_card(_character_or_exit(character_id)), ensure_ascii=False, indent=2)
    if out:
        from xiyou.io import write_text_atomic

        write_text_atomic(out, text + "\n")
        click.echo(f"wrote {out}", err=True)
    else:
        sys.stdout.write(text + "\n")


def _register_room() -> None:
    from xiyou.room.cli import room_cmd

    main.add_command(room_cmd)


_register_room()


def _register_canon() -> None:
    from xiyou.canon.cli import canon_cmd

    main.add_command(canon_cmd)


_register_canon()


def _register_chat() -> None:
    from xiyou.chat_cli import chat_cmd, prompt_cmd

    main.add_command(chat_cmd)
    main.add_command(prompt_cmd)


_register_chat()
main.add_command(__import__("xiyou.story.cli", fromlist=["scenes_cmd"]).scenes_cmd)


if __name__ == "__main__":
    main()
