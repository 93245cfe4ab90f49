"""`xiyou room`: one message to the room, the transcript back as JSON lines (for scripts and terminals)."""

from __future__ import annotations

import sys

import click

from xiyou.io import json_line
from xiyou.names import CHARACTER_IDS, check_person_name
from xiyou.room.engine import DEFAULT_BANTER, DEFAULT_PERSON, Room
from xiyou.room.events import MemberFailed, ReplyDropped, Stopped, TurnEnded
from xiyou.room.lineup import OFFLINE_HELP, LineupError, build_lineup, canon_retriever, load_canon
from xiyou.room.policies import POLICIES
from xiyou.room.transcript import Entry

#: MESSAGE that only asks the narrator to speak (with --narrator).
NARRATE = "/narrate"


def _echo_json(data: dict[str, object]) -> None:
    sys.stdout.write(json_line(data))
    sys.stdout.flush()


def _person(value: str) -> str:
    try:
        return check_person_name(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _line(entry: Entry) -> dict[str, object]:
    line: dict[str, object] = {"speaker": entry.name, "id": entry.speaker, "text": entry.text}
    if entry.citation is not None:
        line["citation"] = entry.citation.label()
        line["chapter"] = entry.citation.chapter
    return line


@click.command("room")
@click.argument("message")
@click.option(
    "-m",
    "--members",
    default=None,
    help=f"Comma-separated character ids in the room [default: the scene's pilgrims, else {','.join(CHARACTER_IDS)}].",
)
@click.option(
    "--endpoints",
    type=click.Path(dir_okay=False),
    help="Endpoints file (TOML, one table per character id); default $XIYOU_ENDPOINTS, else canon mode.",
)
@click.option(
    "--policy",
    type=click.Choice([p for p in POLICIES if p != "manual"]),
    default="mention",
    show_default=True,
    help="Turn policy.",
)
@click.option(
    "--turns",
    type=click.IntRange(0, 50),
    default=DEFAULT_BANTER,
    show_default=True,
    help="Auto-banter turns after the answers.",
)
@click.option(
    "--person",
    default=DEFAULT_PERSON,
    show_default=True,
    callback=lambda _ctx, _param, value: _person(value),
    help="Your name in the room (not a name of the four).",
)
@click.option("--seed", type=int, default=None, help="Seed of the random draws (natural policy, banter).")
@click.option("--canon-hints/--no-canon-hints", default=False, help="Add canon passages to model members' prompts.")
@click.option(
    "--chapter",
    type=click.IntRange(1, 100),
    default=None,
    help="Set the room after chapter N: nothing later is retrieved, cited or known [default: the whole journey].",
)
@click.option(
    "--scene", default=None, help="Start in a scene (id or name, see `xiyou scenes`): members, chapter, setting."
)
@click.option(
    "--narrator/--no-narrator", default=False, help="Add the narrator (旁白); it speaks first, before MESSAGE."
)
@click.option("--narrate-banter", is_flag=True, help="With --narrator: a line of narration between banter turns.")
def room_cmd(
    message: str,
    members: str | None,
    endpoints: str | None,
    policy: str,
    turns: int,
    person: str,
    seed: int | None,
    canon_hints: bool,
    chapter: int | None,
    scene: str | None,
    narrator: bool,
    narrate_banter: bool,
) -> None:
    """Say MESSAGE to the room; print the transcript as JSON lines (MESSAGE `/narrate` with --narrator: only
    the narrator speaks).

    Each line is {"speaker": name, "id": id, "text": ...}, plus "citation" ("第二十七回 · 对唐三藏说") and
    "chapter" (27) for a canon reply; the narrator's lines have the id "narrator"; a member that fails prints
    {"speaker": name, "id": id, "error": ...} and the others go on. Exit status 1 when nobody could speak.
    """
    from xiyou.story.rooms import plan_story_room

    if message.strip() == NARRATE and not narrator:
        raise click.UsageError(f"{NARRATE} asks the narrator to speak: add --narrator")
    ids = [i.strip() for i in (members or "").split(",") if i.strip()]
    if members is not None and not ids:
        raise click.BadParameter("name at least one character id", param_hint="--members")
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise click.BadParameter(
            f"{', '.join(twice)} named more than once ({members}); each character can be in the room once",
            param_hint="--members",
        )
    try:
        story = plan_story_room(ids or None, chapter, scene)
    except ValueError as e:  # StoryError, MembershipError: what to change is in the message
        raise click.UsageError(str(e)) from None
    ids = list(story.ids)
    try:
        prefer = story.scene.chapters if story.scene is not None else None
        lineup = build_lineup(ids, endpoints, max_chapter=story.chapter, prefer_chapters=prefer)
    except LineupError as e:
        raise click.ClickException(str(e)) from None
    if not lineup.available:
        problems = "\n".join(f"- {', '.join(c.id for c in chars)}: {why}" for chars, why in lineup.problems())
        raise click.ClickException(f"{OFFLINE_HELP}\n{problems}")
    retriever = None
    if canon_hints:
        canon, why = load_canon(lineup.novel)
        retriever = canon_retriever(canon, max_chapter=story.chapter) if canon is not None else None
        if retriever is None:
            click.echo(f"canon hints are off: {why or 'no canon retrieval available'}", err=True)
    from xiyou.story.rooms import model_narrator_backend, narrator_member, open_scene, scene_story

    the_narrator = None
    if narrator:
        canon, why = load_canon(lineup.novel)
        try:  # persona mode on one model (XIYOU_API_BASE_URL): the narrator speaks on it too; else the novel's
            model = model_narrator_backend()
        except (ValueError, RuntimeError) as e:
            raise click.ClickException(f"the narrator cannot speak: {e}") from None
        the_narrator = narrator_member(story, canon, model)
        if the_narrator is None:
            raise click.ClickException(f"the narrator tells the novel's narration and needs the novel: {why}")
    click.echo(f"room: {lineup.describe()}; {story.describe()}", err=True)
    room = Room(
        lineup.members(ids, retriever),
        person=person,
        policy=policy,
        banter_turns=turns,
        seed=seed,
        narrator=the_narrator,
        narrate_banter=narrate_banter,
        chapter=story.chapter,
        setting=scene_story(story.scene),
        prefer_chapters=prefer,
    )
    opening = open_scene(room, story)
    if opening is not None:
        _echo_json(_line(opening))
    if the_narrator is not None:
        for event in room.narrate():
            if isinstance(event, TurnEnded):
                _echo_json(_line(event.entry))
    if message.strip() == NARRATE:  # only the narration: nothing is said to the room
        return
    _echo_json(_line(room.say(message)))
    spoke = False
    for event in room.run():
        if isinstance(event, TurnEnded):
            spoke = True
            _echo_json(_line(event.entry))
        elif isinstance(event, MemberFailed):
            n = event.notice
            _echo_json({"speaker": n.name, "id": n.speaker, "error": n.message})
        elif isinstance(event, ReplyDropped | Stopped):
            click.echo(event.notice.message, err=True)
    if not spoke:
        failing = [m.id for m in room.members if room.status[m.id].failing]
        click.echo(f"nobody answered (failing: {', '.join(failing) or 'none'})", err=True)
        sys.exit(1)
