"""Export a character as a Character Card V2 (`chara_card_v2`), importable by SillyTavern and other front ends.

Spec: https://github.com/malfoyslastname/character-card-spec-v2
"""

from __future__ import annotations

from typing import Any

import xiyou
from xiyou.character import Character


def character_card(character: Character) -> dict[str, Any]:
    """The card as a JSON-ready dict; `system_prompt` is the character's `meta_instruction`."""
    return {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": character.name,
            "description": character.description,
            "personality": "",
            "scenario": "《西游记》取经路上。",
            "first_mes": character.greeting,
            "mes_example": "",
            "creator_notes": (
                f"{character.title}: InternLM2-chat-7B fine-tuned with QLoRA (ModelScope {character.model_id}). "
                f"Aliases: {'、'.join(character.aliases)}."
            ),
            "system_prompt": character.meta_instruction,
            "post_history_instructions": "",
            "alternate_greetings": [],
            "tags": ["西游记", "Journey to the West", character.name],
            "creator": "xiyou-roleplay",
            "character_version": xiyou.__version__,
            "extensions": {
                "xiyou": {
                    "id": character.id,
                    "emoji": character.emoji,
                    "aliases": list(character.aliases),
                    "self_refs": list(character.self_refs),
                    "model_id": character.model_id,
                    "revision": character.revision,
                    "sample_questions": list(character.sample_questions),
                }
            },
        },
    }
