"""Build a tiny chat model from the novel: try the whole maintainer loop on a CPU, in seconds, without downloads.

    python -m pipeline.tiny_model runs/tiny-model [--novel /path/to/xiyouji.txt]

A Llama-architecture model with random weights (64 hidden units, 2 layers), a byte-level BPE tokenizer trained on
the novel with InternLM2's chat format (ChatML: `<|im_start|>`, `<|im_end|>`) and a BOS token `<s>` (XTuner starts
every sample with BOS; `pipeline.train --preset cpu-tiny --base-model runs/tiny-model` accepts it). It loads
through the same code as the real characters (`AutoModelForCausalLM` / `AutoTokenizer`, transformers 4.48 and
`transformers serve` 5.x), so `XIYOU_MODEL_<ID>`, `transformers serve` and `pipeline.train` all take it.

Random weights would ramble until `max_new_tokens`, so a few weights are set by hand:

- the embedding of each token of `REPLY` (and of the newline that ends the generation prompt) points along a
  dimension of its own, and the output row of the token that follows it reads that dimension strongly. After
  `<|im_start|>assistant\\n` the model therefore says `REPLY`, token by token, then `<|im_end|>`, under greedy
  decoding and under sampling alike (the margin is tens of logits); every other weight stays random;
- after `<|im_end|>` it goes on with `AFTER` and only then EOS (`<|endoftext|>`). `generation_config.eos_token_id`
  is EOS only, like a base model whose config knows nothing of the chat format: a client that stops at
  `<|im_end|>` shows exactly `REPLY`; one that stops only at EOS shows `REPLY + AFTER`.

Fine-tuning changes what it says (that is the point of the demo loop); the scripted reply is what the untrained
model says. `build_tiny_model` returns a `TinyModel` description, also saved as `tiny_model.json` in the folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from xiyou.env import novel_path as default_novel_path

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
EOS = "<|endoftext|>"
BOS = "<s>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOS, IM_START, IM_END, PAD, BOS)

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
    """What a test (or the demo loop) needs to know about a built tiny model."""

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
        return cls(**{k: v for k, v in raw.items() if k in {f.name for f in dataclasses.fields(cls)}})


def novel_chunks(novel_path: Path, chunk_chars: int = 4000) -> Iterator[str]:
    """The novel's text in pieces, for training a tokenizer."""
    text = novel_path.read_text(encoding="utf-8", errors="replace")
    for i in range(0, len(text), chunk_chars):
        yield text[i : i + chunk_chars]


def train_tokenizer(novel_path: Path, vocab_size: int = 3000, *, bos: bool = True) -> Any:
    """A byte-level BPE tokenizer trained on the novel, with the ChatML special tokens, as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [t for t in SPECIAL_TOKENS if bos or t != BOS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Make sure the reply's and the chat format's text is in the training data (it is the novel's language anyway).
    extra = [REPLY, AFTER, "system\nuser\nassistant\n"]
    tok.train_from_iterator(iter([*novel_chunks(novel_path), *extra]), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS if bos else None,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def scripted_chain(tokenizer: Any, hidden_size: int) -> list[int]:
    """The token ids the model is scripted to follow: last prompt token -> REPLY -> <|im_end|> -> AFTER -> EOS."""
    im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
    prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True)
    reply_ids = tokenizer.encode(REPLY, add_special_tokens=False)
    after_ids = tokenizer.encode(AFTER, add_special_tokens=False)
    chain = [prompt_ids[-1], *reply_ids, im_end_id, *after_ids, tokenizer.eos_token_id]
    if len(set(chain)) != len(chain):
        raise ValueError(f"tiny model: a token repeats in the scripted chain {chain}; change REPLY or AFTER")
    if len(chain) - 1 > hidden_size:
        raise ValueError(f"tiny model: hidden_size {hidden_size} is too small for a chain of {len(chain)} tokens")
    if tokenizer.decode(reply_ids) != REPLY:
        raise ValueError("tiny model: REPLY does not survive an encode/decode round trip")
    return chain


def script_weights(embed: Any, head: Any, chain: Sequence[int]) -> None:
    """Set the input embeddings and output rows so that each token of `chain` is followed by the next (the margin
    is tens of logits, whatever the random layers in between add)."""
    import torch

    with torch.no_grad():
        for dim, (token, successor) in enumerate(itertools.pairwise(chain)):
            embed[token].zero_()
            embed[token, dim] = 4.0
            head[successor, dim] = 5.0


def build_tiny_model(
    out_dir: str | Path,
    novel_path: str | Path,
    *,
    tokenizer: Any = None,
    bos: bool = True,
    vocab_size: int = 3000,
    hidden_size: int = 64,
    num_layers: int = 2,
    max_position_embeddings: int = 512,
    seed: int = 0,
) -> TinyModel:
    """Build the tiny model into `out_dir` (created) and describe it. Takes a few seconds on a CPU.

    `tokenizer`: use this one (it must have a chat template, `<|im_end|>` and an EOS) instead of training the
    byte-level BPE one; `bos=False` builds a tokenizer without BOS (which `pipeline.train` refuses)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = train_tokenizer(Path(novel_path), vocab_size=vocab_size, bos=bos)

    chain = scripted_chain(tokenizer, hidden_size)
    im_end_id, eos_id = tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id
    reply_ids = tokenizer.encode(REPLY, add_special_tokens=False)

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
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    script_weights(model.model.embed_tokens.weight, model.lm_head.weight, chain)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_id, pad_token_id=tokenizer.pad_token_id
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.tiny_model",
        description="Build a tiny chat model (random weights, a tokenizer trained on the novel, ChatML, a BOS "
        "token) to try the training loop on a CPU.",
    )
    p.add_argument("out", type=Path, help="the model folder to write (created; an existing model there is replaced)")
    p.add_argument("--novel", type=Path, help="the novel's text (default: $XIYOU_NOVEL, else ../shared/data)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights (default: %(default)s)")
    args = p.parse_args(argv)
    novel = args.novel or default_novel_path()
    if novel is None or not Path(novel).is_file():
        print(f"error: the novel {novel or '(unset)'} is not a file: pass --novel PATH or set XIYOU_NOVEL",
              file=sys.stderr)  # fmt: skip
        return 1
    info = build_tiny_model(args.out, novel, seed=args.seed)
    print(f"[tiny_model] {info.path}: vocabulary {info.vocab_size}, says {info.reply!r} then <|im_end|>")
    print(f"    serve it:  transformers serve {info.path} --host 127.0.0.1 --port 8000   (model name: its path)")
    print(f"    train it:  .venv-train/bin/python -m pipeline.train bajie --preset cpu-tiny --base-model {info.path} …")
    return 0


if __name__ == "__main__":
    sys.exit(main())
