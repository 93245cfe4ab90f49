"""A tiny chat model built locally for tests: Llama architecture, random weights, a tokenizer trained on the novel.

It loads through the same code as the real characters (`AutoModelForCausalLM` / `AutoTokenizer`, in
transformers 4.48 and in `transformers serve` 5.x), so tests exercise the real loading path without a model hub.

Random weights would ramble until `max_new_tokens`, which makes "stops at the end of the turn" impossible to
check and makes `transformers serve` (1024 new tokens by default) slow. So a few weights are set by hand:

- the embedding of each token of `REPLY` (and of the newline that ends the generation prompt) points along a
  dimension of its own, and the output row of the token that follows it reads that dimension strongly. After
  `<|im_start|>assistant\\n` the model therefore says `REPLY`, token by token, then `<|im_end|>`, under greedy
  decoding and under sampling alike (the margin is tens of logits); every other weight stays random;
- after `<|im_end|>` the model goes on with `AFTER` and only then the tokenizer's EOS (`<|endoftext|>`).
  `generation_config.eos_token_id` is EOS only, like a base model whose config knows nothing of the chat
  format: a client that stops at `<|im_end|>` shows exactly `REPLY`; one that only stops at EOS shows
  `REPLY + AFTER`.

`build_tiny_model(out_dir, novel_path)` writes the model directory and returns its `TinyModel` description
(also saved as `tiny_model.json` in the directory; `TinyModel.load(dir)` reads it back).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOS, IM_START, IM_END, PAD)

#: What the tiny model says after the generation prompt, whatever it is asked.
REPLY = "俺老孙来也！师父莫怕，妖怪已打死了。"
#: What it would say after `<|im_end|>` if nobody stopped it there (then EOS).
AFTER = "八戒又偷懒"

#: ChatML, as InternLM2 uses; content may also be a list of text parts (OpenAI style, as `transformers serve`
#: passes it).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

INFO_FILE = "tiny_model.json"


@dataclasses.dataclass(frozen=True)
class TinyModel:
    """What a test needs to know about a built tiny model."""

    path: Path
    reply: str
    after: str
    reply_token_count: int
    im_end_id: int
    eos_id: int
    vocab_size: int
    max_position_embeddings: int

    @classmethod
    def load(cls, path: str | Path) -> TinyModel:
        raw = json.loads((Path(path) / INFO_FILE).read_text(encoding="utf-8"))
        raw["path"] = Path(path)
        return cls(**raw)


def _novel_chunks(novel_path: Path, chunk_chars: int = 4000) -> Iterator[str]:
    text = novel_path.read_text(encoding="utf-8", errors="replace")
    for i in range(0, len(text), chunk_chars):
        yield text[i : i + chunk_chars]


def train_tokenizer(novel_path: Path, vocab_size: int = 3000):
    """A byte-level BPE tokenizer trained on the novel, with the ChatML special tokens, as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Make sure the reply's and the chat format's text is in the training data (it is the novel's language anyway).
    extra = [REPLY, AFTER, "system\nuser\nassistant\n"]
    tok.train_from_iterator(iter([*_novel_chunks(novel_path), *extra]), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(
    out_dir: str | Path,
    novel_path: str | Path,
    *,
    vocab_size: int = 3000,
    hidden_size: int = 64,
    num_layers: int = 2,
    max_position_embeddings: int = 512,
    seed: int = 0,
) -> TinyModel:
    """Build the tiny model into `out_dir` (created) and describe it. Takes a few seconds on a CPU."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(Path(novel_path), vocab_size=vocab_size)

    im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True)
    reply_ids = tokenizer.encode(REPLY, add_special_tokens=False)
    after_ids = tokenizer.encode(AFTER, add_special_tokens=False)
    # The chain the model follows: last prompt token -> REPLY -> <|im_end|> -> AFTER -> EOS.
    chain = [prompt_ids[-1], *reply_ids, im_end_id, *after_ids, eos_id]
    if len(set(chain)) != len(chain):
        raise ValueError(f"tiny model: a token repeats in the scripted chain {chain}; change REPLY or AFTER")
    if len(chain) - 1 > hidden_size:
        raise ValueError(f"tiny model: hidden_size {hidden_size} is too small for a chain of {len(chain)} tokens")
    if tokenizer.decode(reply_ids) != REPLY:
        raise ValueError("tiny model: REPLY does not survive an encode/decode round trip")

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        head = model.lm_head.weight
        for dim, (token, successor) in enumerate(itertools.pairwise(chain)):
            embed[token].zero_()
            embed[token, dim] = 4.0
            head[successor, dim] = 5.0
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)

    info = TinyModel(
        path=out_dir,
        reply=REPLY,
        after=AFTER,
        reply_token_count=len(reply_ids),
        im_end_id=im_end_id,
        eos_id=eos_id,
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
    )
    raw = dataclasses.asdict(info)
    raw.pop("path")
    (out_dir / INFO_FILE).write_text(json.dumps(raw, ensure_ascii=False, indent=2), encoding="utf-8")
    return info


if __name__ == "__main__":  # python tests/tiny_model.py OUT_DIR NOVEL
    import sys

    print(build_tiny_model(sys.argv[1], sys.argv[2]))


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
