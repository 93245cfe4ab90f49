"""`xiyou scenes`: the scene catalogue (rooms start in one with `xiyou room --scene ID`)."""

from __future__ import annotations

import click

from xiyou.story.scenes import get_scene, list_scenes
from xiyou.story.timeline import StoryError


@click.command("scenes")
@click.argument("scene", required=False)
def scenes_cmd(scene: str | None) -> None:
    """List the canonical scenes, or show one SCENE (id or name) with its setting."""
    if scene:
        try:
            s = get_scene(scene)
        except StoryError as e:
            raise click.BadParameter(str(e), param_hint="SCENE") from None
        from xiyou.character import get_character

        members = "、".join(get_character(c).name for c in s.present)
        click.echo(f"{s.id} · {s.kind} · present: {members}; others: {'、'.join(s.others) or '-'}")
        click.echo(s.setting())
        return
    for s in list_scenes():
        click.echo(f"{s.id:<20} {s.kind}  {s.name}（{s.chapter_label} · {s.place}）")
