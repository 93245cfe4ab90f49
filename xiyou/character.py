"""The characters: one TOML file each in `xiyou/characters/`, loaded into validated, immutable objects.

The character file is the single source of truth: the same `meta_instruction` is the system prompt of the
training data, of the XTuner config, of every app and of the hub.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from xiyou.validation import describe_validation_error

CHARACTERS_DIR = Path(__file__).with_name("characters")

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
#: A line of the novel by its exchange id: chapter and offset (c014-001597), read from the novel, never copied.
ExchangeId = Annotated[str, StringConstraints(pattern=r"^c\d{3}-\d{6}$")]
EnglishName = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z][A-Za-z' -]*$")]


class CharacterError(ValueError):
    """A character file is broken, or a character id is unknown. The message says which and what to do."""


class Generation(BaseModel):
    """Default generation settings for a character (the apps' sliders start here)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    temperature: float = Field(ge=0.0, le=2.0)
    top_p: float = Field(gt=0.0, le=1.0)
    max_new_tokens: int = Field(ge=1, le=32768)
    repetition_penalty: float = Field(ge=1.0, le=2.0)


class ChapterRule(BaseModel):
    """Where an alias names the character in the narration: chapters `first`..`last` (None: to the end), less
    `excluding`; `reason` says who else it names elsewhere."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    first: int = Field(default=1, ge=1)
    last: int | None = Field(default=None, ge=1)
    excluding: tuple[int, ...] = ()
    reason: NonEmpty

    @field_validator("excluding", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value

    def names_him_in(self, chapter: int) -> bool:
        """Does the alias name the character in this chapter's narration?"""
        if chapter < self.first or (self.last is not None and chapter > self.last):
            return False
        return chapter not in self.excluding


class UnnamedScene(BaseModel):
    """A scene where the narration calls him by what he is (那怪, 那妖, 怪物 …) before the novel names him: in
    chapter `chapter`, from the paragraph holding `start` (default: the chapter's start) to the first `end` after it
    (default: the chapter's end), a speaker named one of `names` is him. A marker not found in
    the chapter (another copy of the novel) leaves the scene out: precision first. `reason` says why it is certain."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    chapter: int = Field(ge=1)
    start: str = ""
    end: str = ""
    names: tuple[NonEmpty, ...] = Field(min_length=1)
    reason: NonEmpty

    @field_validator("names", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value


class SmallTalk(BaseModel):
    """His lines of the novel for each act of small talk (`xiyou.canon.smalltalk`), by exchange id, best first."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    who: tuple[ExchangeId, ...] = ()
    farewell: tuple[ExchangeId, ...] = ()
    thanks: tuple[ExchangeId, ...] = ()
    apology: tuple[ExchangeId, ...] = ()
    how_are_you: tuple[ExchangeId, ...] = ()
    compliment: tuple[ExchangeId, ...] = ()
    greeting: tuple[ExchangeId, ...] = ()

    @field_validator("*", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value


class About(BaseModel):
    """Offline, his own lines of the novel about himself, per topic (`xiyou.canon.about.TOPICS`), best first, by
    exchange id: a question on the topic (你有什么本事？) gets the first not yet said."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    heaven: tuple[ExchangeId, ...] = ()
    origin: tuple[ExchangeId, ...] = ()
    family: tuple[ExchangeId, ...] = ()
    name: tuple[ExchangeId, ...] = ()
    weapon: tuple[ExchangeId, ...] = ()
    skills: tuple[ExchangeId, ...] = ()
    character: tuple[ExchangeId, ...] = ()
    pride: tuple[ExchangeId, ...] = ()
    wish: tuple[ExchangeId, ...] = ()
    food: tuple[ExchangeId, ...] = ()
    practice: tuple[ExchangeId, ...] = ()
    hardship: tuple[ExchangeId, ...] = ()
    journey: tuple[ExchangeId, ...] = ()

    @field_validator("*", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value


class Character(BaseModel):
    """One pilgrim: who they are, how they speak, and where their fine-tuned weights live."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
    order: int = Field(ge=0)
    name: NonEmpty
    title: NonEmpty
    emoji: NonEmpty
    aliases: tuple[NonEmpty, ...] = Field(min_length=1)
    self_refs: tuple[NonEmpty, ...] = Field(min_length=1)
    #: How others address him (师父, 大师兄, 呆子 …); may repeat aliases.
    forms_of_address: tuple[NonEmpty, ...] = Field(min_length=1)
    #: How he calls one of the others where the word is his alone (八戒's 哥哥 is always 悟空; 沙僧's is not):
    #: character id -> forms. A line of his that opens by calling one so was said to him (the 📖 citation).
    calls: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")], tuple[NonEmpty, ...]] = Field(
        default_factory=dict
    )
    #: Names the narration gives him besides `aliases` (they attribute speech to him).
    narration_names: tuple[NonEmpty, ...] = ()
    #: How English texts name him ("Monkey King"); matched case-insensitively as whole words.
    english_names: tuple[EnglishName, ...] = ()
    #: Aliases that never attribute speech in the narration: alias -> why.
    ambiguous_in_narration: dict[str, NonEmpty] = Field(default_factory=dict)
    #: Aliases that name him in the narration only in some chapters.
    narration_chapters: dict[str, ChapterRule] = Field(default_factory=dict)
    #: Scenes before the novel names him, where the narration calls him by what he is (那怪 …).
    unnamed_scenes: tuple[UnnamedScene, ...] = ()
    talkativeness: float = Field(ge=0.0, le=1.0)
    model_id: NonEmpty
    revision: NonEmpty
    greeting: NonEmpty
    meta_instruction: NonEmpty
    persona_prompt: NonEmpty
    sample_questions: tuple[NonEmpty, ...] = Field(min_length=10)
    #: Questions put to him in the novel that his next line there answers, by that line's exchange id (c014-001597:
    #: chapter and offset): offline, the apps suggest these instead of `sample_questions`, read from the novel.
    book_questions: tuple[ExchangeId, ...] = ()
    #: Offline, his own lines of the novel for small talk (a greeting, thanks, who he is …), by exchange id.
    small_talk: SmallTalk = Field(default_factory=SmallTalk)
    #: Offline, his own lines of the novel about himself (his fears, wishes, skills …), per topic, by exchange id.
    about: About = Field(default_factory=About)
    generation: Generation

    @field_validator(
        "aliases", "self_refs", "sample_questions", "book_questions", "forms_of_address", "narration_names",
        "english_names", "unnamed_scenes", mode="before",
    )
    @classmethod
    def _list_to_tuple(cls, value: object) -> object:
        # TOML gives lists; strict mode would refuse them for tuple fields.
        return tuple(value) if isinstance(value, list) else value

    @field_validator("aliases", "forms_of_address", "narration_names", "english_names")
    @classmethod
    def _no_duplicate_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        folded = [a.casefold() for a in value]
        seen = [a for i, a in enumerate(value) if a.casefold() in folded[:i]]
        if seen:
            raise ValueError(f"duplicate name {seen[0]!r}")
        return value

    @field_validator("calls", mode="before")
    @classmethod
    def _calls_lists_to_tuples(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}

    @model_validator(mode="after")
    def _rules_name_aliases(self) -> Character:
        if self.id in self.calls:
            raise ValueError(f"calls: {self.id!r} is this character; list how he calls the others")
        for field in ("ambiguous_in_narration", "narration_chapters"):
            unknown = [a for a in getattr(self, field) if a not in self.names]
            if unknown:
                raise ValueError(f"{field}: {unknown[0]!r} is not one of the aliases; add it to `aliases` first")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the character goes by: display name first, then the aliases."""
        return (self.name, *[a for a in self.aliases if a != self.name])

    @property
    def description(self) -> str:
        """The persona description without the trailing role-play instruction of the data-generation prompt."""
        return self.persona_prompt.split("请你扮演")[0].strip()


def load_character_file(path: Path) -> Character:
    """Load and validate one character file; errors name the file, the field and the problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise CharacterError(f"{path}: not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CharacterError(f"{path}: cannot read the file: {e}") from None
    try:
        character = Character.model_validate(raw)
    except ValidationError as e:
        raise CharacterError(f"{path}: {describe_validation_error(e)}") from None
    return character


def load_characters(directory: Path | str | None = None) -> dict[str, Character]:
    """All characters in `directory` (default: the package's own), keyed by id, in their `order`."""
    directory = Path(directory) if directory is not None else CHARACTERS_DIR
    if directory == CHARACTERS_DIR:
        return dict(_load_builtin())
    return _load_dir(directory)


def _load_dir(directory: Path) -> dict[str, Character]:
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise CharacterError(f"{directory}: no character files (*.toml) found")
    by_id: dict[str, tuple[Path, Character]] = {}
    for path in files:
        character = load_character_file(path)
        if character.id in by_id:
            raise CharacterError(
                f"{path}: field 'id': duplicate id {character.id!r}, already defined in {by_id[character.id][0]}; "
                "give each character its own id"
            )
        by_id[character.id] = (path, character)
    _check_names_unique(by_id)
    for path, c in by_id.values():
        unknown = [cid for cid in c.calls if cid not in by_id]
        if unknown:
            raise CharacterError(
                f"{path}: calls: {unknown[0]!r} is not a character here; valid ids: {', '.join(sorted(by_id))}"
            )
    ordered = sorted(by_id.values(), key=lambda pc: (pc[1].order, pc[1].id))
    return {c.id: c for _, c in ordered}


def _check_names_unique(by_id: dict[str, tuple[Path, Character]]) -> None:
    """A name (alias, narration name, English name) belongs to one character only. A form of address may be shared
    with another character's form of address (then it calls nobody in particular), never with his names."""
    owner: dict[str, tuple[Path, str, bool]] = {}  # casefolded name -> (file, id, only a form of address)
    for path, c in sorted(by_id.values(), key=lambda pc: (pc[1].order, pc[1].id)):  # the later one is blamed
        own = {n.casefold() for n in (*c.names, *c.narration_names, *c.english_names)}
        for name in (*c.names, *c.narration_names, *c.english_names, *c.forms_of_address):
            key = name.casefold()
            is_form = key not in own
            if key in owner and owner[key][1] != c.id and not (is_form and owner[key][2]):
                other_path, other_id, _ = owner[key]
                raise CharacterError(
                    f"{path}: the name {name!r} is also a name of {other_id!r} ({other_path.name}); "
                    "a name belongs to one character only (only forms of address may be shared)"
                )
            owner.setdefault(key, (path, c.id, is_form))


@functools.cache
def _load_builtin() -> tuple[tuple[str, Character], ...]:
    return tuple(_load_dir(CHARACTERS_DIR).items())


def character_ids() -> list[str]:
    """The built-in character ids, in order: sanzang, wukong, bajie, wujing."""
    return list(load_characters())


def get_character(character_id: str, characters: dict[str, Character] | None = None) -> Character:
    """One character by id; an unknown id raises CharacterError listing the valid ones."""
    characters = characters if characters is not None else load_characters()
    try:
        return characters[character_id]
    except KeyError:
        raise CharacterError(
            f"unknown character {character_id!r}; valid ids: {', '.join(characters)}"
        ) from None
