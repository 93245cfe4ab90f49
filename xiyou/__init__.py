"""西游 Roleplay: the four pilgrims of *Journey to the West* as chat characters.

The package holds all the logic; `apps/`, `hub/` and `openxlab/` are thin Streamlit entry points and
`pipeline/` holds the maintainer steps. Start with `xiyou.character` (who the characters are) and
`xiyou.backends` (how a character speaks).
"""

from xiyou.character import Character, CharacterError, get_character, load_characters

__version__ = "0.1.0"

__all__ = ["Character", "CharacterError", "__version__", "get_character", "load_characters"]
