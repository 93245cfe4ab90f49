"""How a character speaks: one small interface, several implementations.

`base` holds the interface every backend follows (messages in, text deltas out); the implementations
(local transformers weights, an OpenAI-compatible server, the canon's own lines) live in sibling modules.
"""

from xiyou.backends.base import Backend, BackendError, GenerationSettings, Message, collect

__all__ = ["Backend", "BackendError", "GenerationSettings", "Message", "collect"]
