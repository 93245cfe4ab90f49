"""The tiny chat model of the tests: built by `pipeline.tiny_model` (see there for how it is scripted).

Tests import it from here (`from tiny_model import TinyModel, IM_END, …`); `at_model_speed` is for tests only.
"""

from __future__ import annotations

from pipeline.tiny_model import (  # noqa: F401  (re-exported for the tests)
    AFTER,
    BOS,
    CHAT_TEMPLATE,
    EOS,
    IM_END,
    IM_START,
    INFO_FILE,
    PAD,
    REPLY,
    SPECIAL_TOKENS,
    TinyModel,
    build_tiny_model,
    novel_chunks,
    script_weights,
    scripted_chain,
    train_tokenizer,
)


def at_model_speed(seconds_per_token: float = 0.03):
    """`generate` keyword arguments that make each token take `seconds_per_token`: the tiny model at the pace of a
    7B model (20-50 ms a token), where every token is a delta of its own."""
    import time

    from transformers import LogitsProcessor, LogitsProcessorList

    class Pace(LogitsProcessor):
        def __call__(self, input_ids, scores):
            time.sleep(seconds_per_token)
            return scores

    return {"logits_processor": LogitsProcessorList([Pace()])}
