"""The local-weights backend on the tiny model, loaded through XIYOU_MODEL_WUKONG and the real loading code."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from tiny_model import IM_END, TinyModel, at_model_speed

from xiyou.backends.base import BackendError, GenerationSettings
from xiyou.backends.factory import make_backend
from xiyou.backends.transformers_backend import CHAT_FORMAT_TOKENS, TransformersBackend
from xiyou.character import get_character
from xiyou.env import REPO_ROOT

WUKONG = get_character("wukong")


@pytest.fixture
def backend(tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch) -> TransformersBackend:
    monkeypatch.setenv("XIYOU_MODEL_WUKONG", str(tiny_model.path))
    monkeypatch.setenv("XIYOU_BACKEND", "transformers")
    b = make_backend(WUKONG)
    assert isinstance(b, TransformersBackend)
    return b


def chat(question: str = "大圣，你好") -> list[dict]:
    return [{"role": "system", "content": WUKONG.meta_instruction}, {"role": "user", "content": question}]


def test_streams_several_deltas_and_stops_at_end_of_turn(backend: TransformersBackend, tiny_model: TinyModel) -> None:
    # The tiny model's own generation config stops at EOS only (it would go on with AFTER, see
    # tests/test_tiny_model.py): the reply ends at <|im_end|> because the backend stops there.
    assert tiny_model.im_end_id in backend.loaded.stop_ids
    backend.generate_overrides.update(at_model_speed())  # a 7B model's pace: every token is a delta of its own
    for settings in (GenerationSettings.for_character(WUKONG, max_new_tokens=64), GenerationSettings(temperature=0)):
        deltas = list(backend.stream(chat(), settings))
        assert len(deltas) >= 5 and all(deltas)
        assert "".join(deltas) == tiny_model.reply
        assert tiny_model.after not in "".join(deltas)


def test_max_new_tokens_and_stop_strings_end_the_reply(backend: TransformersBackend, tiny_model: TinyModel) -> None:
    short = "".join(backend.stream(chat(), GenerationSettings(max_new_tokens=4, temperature=0)))
    assert short and tiny_model.reply.startswith(short) and len(short) < len(tiny_model.reply)
    stop = "莫怕"
    cut = "".join(backend.stream(chat(), GenerationSettings(temperature=0, stop=(stop,))))
    assert cut == tiny_model.reply.split(stop)[0]


def test_long_history_is_trimmed_oldest_first_keeping_the_system_prompt(backend: TransformersBackend) -> None:
    system = {"role": "system", "content": WUKONG.meta_instruction}
    turns = []
    for i in range(40):
        turns += [
            {"role": "user", "content": f"第{i}问：师父在哪里？"},
            {"role": "assistant", "content": "师父在前面。" * 3},
        ]
    messages = [system, *turns, {"role": "user", "content": "最后一问"}]
    max_new = 64
    assert len(backend.prompt_ids(messages)) + max_new > backend.loaded.context_length  # needs trimming
    kept = backend.fit_messages(messages, max_new)
    assert kept[0] == system
    assert kept[-1] == messages[-1]
    assert kept[1]["role"] == "user"
    assert 3 < len(kept) < len(messages)
    assert kept[1:] == messages[len(messages) - len(kept) + 1 :]  # a suffix: the oldest turns went first
    assert len(backend.prompt_ids(kept)) + max_new <= backend.loaded.context_length
    # and the backend does this by itself when answering
    assert "".join(backend.stream(messages, GenerationSettings(max_new_tokens=max_new, temperature=0)))


def test_a_message_too_long_for_the_context_is_a_clear_error(backend: TransformersBackend) -> None:
    with pytest.raises(BackendError, match="too long"):
        list(backend.stream(chat("长" * 2000), GenerationSettings()))


def test_chat_template_falls_back_to_internlm2_chatml(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = backend.loaded.tokenizer
    monkeypatch.setattr(tok, "chat_template", None)
    text = tok.decode(backend.prompt_ids(chat("你好")))
    # InternLM2 puts BOS (<s>) first; the tiny model's tokenizer has one too.
    assert text == f"<s><|im_start|>system\n{WUKONG.meta_instruction}<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n" + (
        "<|im_start|>assistant\n"
    )


def test_cancel_mid_stream_stops_and_frees_the_model(backend: TransformersBackend, tiny_model: TinyModel) -> None:
    cancel = threading.Event()
    got = []
    for delta in backend.stream(chat(), GenerationSettings(temperature=0), cancel):
        got.append(delta)
        cancel.set()
    assert len(got) == 1 and len(got[0]) < len(tiny_model.reply)
    assert backend.loaded.lock.acquire(blocking=False)  # the generation ended and let go of the model
    backend.loaded.lock.release()
    # Abandoning the iterator (a page rerun) does the same.
    it = backend.stream(chat(), GenerationSettings(temperature=0))
    next(it)
    it.close()
    assert backend.loaded.lock.acquire(blocking=False)
    backend.loaded.lock.release()


def test_one_generation_at_a_time_per_model(
    backend: TransformersBackend, tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = backend.loaded.model
    real_generate = model.generate
    active, most = [0], [0]
    guard = threading.Lock()

    def generate(*args, **kwargs):
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            time.sleep(0.05)  # widen the window in which overlapping generations would be seen
            return real_generate(*args, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(model, "generate", generate)
    replies: list[str] = []
    start = threading.Barrier(4)

    def visitor() -> None:
        start.wait()
        replies.append("".join(backend.stream(chat(), GenerationSettings(temperature=0))))

    threads = [threading.Thread(target=visitor) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert replies == [tiny_model.reply] * 4  # everyone got a whole reply: they queued
    assert most[0] == 1


def test_a_failing_generation_is_a_backend_error_and_frees_the_model(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(backend.loaded.model, "generate", broken)
    with pytest.raises(BackendError, match="CUDA out of memory"):
        list(backend.stream(chat(), GenerationSettings()))
    assert backend.loaded.lock.acquire(blocking=False)
    backend.loaded.lock.release()


def test_a_wrong_local_path_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("XIYOU_MODEL_WUKONG", str(tmp_path / "nowhere"))
    with pytest.raises(BackendError) as err:
        make_backend(WUKONG, kind="transformers")
    assert "XIYOU_MODEL_WUKONG" in str(err.value) and str(tmp_path / "nowhere") in str(err.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_unreachable_model_hub_gives_the_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # ModelScope's real download code, pointed at a port where nothing listens (it retries a few times; its waits
    # between tries, 1 + 2 + 4 s, are capped to none here)
    from modelscope_hub import _legacy_api

    monkeypatch.setattr(_legacy_api, "REPO_TREE_PAGE_RETRY_MAX_DELAY_SECONDS", 0)
    monkeypatch.delenv("XIYOU_MODEL_WUKONG", raising=False)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "modelscope"))
    monkeypatch.setenv("XIYOU_ALLOW_UNPINNED_REVISION", "1")  # the characters' revision is a branch (master)
    with pytest.raises(BackendError) as err:
        make_backend(WUKONG, kind="transformers")
    message = str(err.value)
    assert WUKONG.model_id in message  # which weights
    assert "XIYOU_MODEL_WUKONG" in message  # what to set
    assert f"modelscope download --model {WUKONG.model_id}" in message  # how to get them


class _SlowTokenizer:
    """The tiny tokenizer seen as a slow (Python) tokenizer, as InternLM2's is: only `decode` is used."""

    is_fast = False

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer

    def decode(self, ids, **kwargs) -> str:
        return self._tok.decode(ids, **kwargs)


@pytest.mark.parametrize("kind", ["fast", "slow"])
def test_streamer_releases_whole_characters_incrementally(backend: TransformersBackend, kind: str) -> None:
    import torch

    from xiyou.backends.transformers_backend import TokenStreamer

    tok = backend.loaded.tokenizer
    streamer = TokenStreamer(tok if kind == "fast" else _SlowTokenizer(tok))
    text = "俺老孙来也！Hello, 师父 莫怕。"
    ids = tok.encode(text, add_special_tokens=False)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped
    pieces = []
    for i in [*ids, backend.loaded.stop_ids[-1]]:  # one token at a time, then the end of turn (skipped)
        streamer.put(torch.tensor([i]))
        assert streamer.arrived.is_set()
        piece, ended = streamer.take()
        pieces.append(piece)
        assert not ended and not streamer.arrived.is_set()
    streamer.end()
    piece, ended = streamer.take()
    pieces.append(piece)
    assert ended and "".join(pieces) == text
    assert len([p for p in pieces if p]) >= 8 and not any("\ufffd" in p for p in pieces)


@pytest.mark.parametrize("kind", ["fast", "slow"])
def test_streamer_read_late_gives_everything_in_one_piece(backend: TransformersBackend, kind: str) -> None:
    import torch

    from xiyou.backends.transformers_backend import TokenStreamer

    tok = backend.loaded.tokenizer
    streamer = TokenStreamer(tok if kind == "fast" else _SlowTokenizer(tok))
    text = "师父，妖怪来了！"
    streamer.put(torch.tensor([[1, 2, 3]]))
    for i in tok.encode(text, add_special_tokens=False):
        streamer.put(torch.tensor([i]))
    streamer.end()
    assert list(streamer) == [text]


def test_unpaced_backend_streams_a_fast_model_token_by_token(
    backend: TransformersBackend, tiny_model: TinyModel
) -> None:
    unpaced = TransformersBackend(WUKONG, tiny_model.path, min_delta_interval_s=0)
    assert unpaced.loaded is backend.loaded  # one model per process
    deltas = list(unpaced.stream(chat(), GenerationSettings(temperature=0)))
    assert "".join(deltas) == tiny_model.reply and all(deltas) and len(deltas) >= 5


def test_paced_deltas_come_together_and_the_end_is_not_held_back(
    backend: TransformersBackend, tiny_model: TinyModel
) -> None:
    assert backend.min_delta_interval_s == pytest.approx(1 / 60)  # the pages' pace: a screen's refresh rate
    # An hour between deltas: the reply still ends, in two deltas at most (the first at once, then the rest the
    # moment generation ends), because the end of the reply cuts the pacing wait short.
    paced = TransformersBackend(WUKONG, tiny_model.path, min_delta_interval_s=3600.0)
    cancel = threading.Event()
    deltas: list[str] = []
    reader = threading.Thread(
        target=lambda: deltas.extend(paced.stream(chat(), GenerationSettings(temperature=0), cancel)), daemon=True
    )
    reader.start()
    reader.join(timeout=300)  # a hang guard, not a measurement: without the cut it would wait an hour
    cancel.set()
    assert not reader.is_alive(), "the pacing wait was not cut short by the end of the reply"
    assert "".join(deltas) == tiny_model.reply and all(deltas)
    assert 1 <= len(deltas) <= 2 < tiny_model.reply_token_count


# --- InternLM2's slow SentencePiece tokenizer, whose config does not declare the chat tokens special -----------

#: A slow tokenizer over a SentencePiece model, loaded as remote code, as InternLM2's `tokenization_internlm2.py`
#: is: it decodes with the SentencePiece model, so a token not declared special comes out as its text.
SLOW_TOKENIZER_CODE = """
import os
import shutil

import sentencepiece as spm
from transformers import PreTrainedTokenizer


class SentencePieceTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, **kwargs):
        self.vocab_file = vocab_file
        self.sp_model = spm.SentencePieceProcessor(model_file=vocab_file)
        super().__init__(**kwargs)

    @property
    def vocab_size(self):
        return self.sp_model.get_piece_size()

    def get_vocab(self):
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text):
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token):
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index):
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens):
        return self.sp_model.decode(tokens)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        out = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model")
        if os.path.abspath(self.vocab_file) != os.path.abspath(out):
            shutil.copyfile(self.vocab_file, out)
        return (out,)
"""


@pytest.fixture(scope="module")
def sentencepiece_model(novel_path: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny model (same scripted reply) with a slow SentencePiece tokenizer trained on the novel: byte fallback,
    the chat-format tokens in its vocabulary as whole pieces, but not declared special in its config."""
    import importlib.util
    import io

    import sentencepiece as spm
    from tiny_model import AFTER, CHAT_TEMPLATE, REPLY, build_tiny_model

    out = tmp_path_factory.mktemp("sentencepiece_model")
    text = novel_path.read_text(encoding="utf-8", errors="replace")[:300_000]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([*text.splitlines(), REPLY, AFTER]), model_writer=model, vocab_size=3000,
        model_type="bpe", byte_fallback=True, character_coverage=0.99, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, user_defined_symbols=list(CHAT_FORMAT_TOKENS),
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, num_threads=1,
    )  # fmt: skip
    (out / "tokenizer.model").write_bytes(model.getvalue())
    code = out / "tokenization_sp.py"
    code.write_text(SLOW_TOKENIZER_CODE, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("tokenization_sp", code)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = module.SentencePieceTokenizer(
        str(out / "tokenizer.model"), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
    )  # fmt: skip
    info = build_tiny_model(out, novel_path, tokenizer=tokenizer)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoTokenizer": ["tokenization_sp.SentencePieceTokenizer", None]}  # remote code
    config_path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return info


def test_a_slow_sentencepiece_tokenizer_never_shows_the_end_of_turn_marker(
    sentencepiece_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    from xiyou.backends.transformers_backend import TokenStreamer

    # The folder as published: a slow tokenizer; <|im_end|> is one id of the vocabulary, not a special token, so
    # decoding the reply with its stop id shows the marker (what the apps showed, and saved into the history).
    raw = AutoTokenizer.from_pretrained(sentencepiece_model.path, trust_remote_code=True)
    assert not raw.is_fast and type(raw).__name__ == "SentencePieceTokenizer"
    assert raw.convert_tokens_to_ids(IM_END) == sentencepiece_model.im_end_id
    assert IM_END not in raw.all_special_tokens
    reply_ids = raw.encode(sentencepiece_model.reply, add_special_tokens=False)
    assert raw.decode([*reply_ids, sentencepiece_model.im_end_id], skip_special_tokens=True).endswith(IM_END)

    monkeypatch.setenv("XIYOU_MODEL_WUKONG", str(sentencepiece_model.path))
    backend = TransformersBackend(WUKONG, device="cpu", min_delta_interval_s=0)
    tok = backend.loaded.tokenizer
    assert len(tok) == len(raw)  # no token added: the model's embeddings still match
    present = [t for t in CHAT_FORMAT_TOKENS if t in raw.get_vocab()]
    assert present == list(CHAT_FORMAT_TOKENS) and set(present) <= set(tok.all_special_tokens)
    assert tok.decode([sentencepiece_model.im_end_id], skip_special_tokens=True) == ""
    assert sentencepiece_model.im_end_id in backend.loaded.stop_ids
    # The prompt is the same ids as before (the chat tokens were single pieces already).
    messages = chat()
    assert backend.prompt_ids(messages) == list(raw.apply_chat_template(messages, add_generation_prompt=True))

    for settings in (GenerationSettings(temperature=0), GenerationSettings(temperature=0.8, seed=1)):
        deltas = list(backend.stream(chat(), settings))
        assert "".join(deltas) == sentencepiece_model.reply  # exactly the text: no marker, no trailing space
        assert len(deltas) >= 5

    # And the streamer itself never decodes a stop id, whatever the tokenizer declares.
    import torch

    streamer = TokenStreamer(raw, skip_ids=[sentencepiece_model.im_end_id])
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt
    for i in [*reply_ids, sentencepiece_model.im_end_id]:
        streamer.put(torch.tensor([i]))
    streamer.end()
    assert "".join(streamer) == sentencepiece_model.reply


# --- a tiny InternLM2-architecture model, on InternLM2's own modeling code (from XTuner, in .venv-train) ---------


def internlm2_code() -> Path:
    """XTuner's copy of InternLM2's remote modeling code in the training environment; skips when it is absent."""
    import subprocess

    value = os.environ.get("XIYOU_TRAIN_PYTHON", "").strip()
    python = Path(value) if value else REPO_ROOT / ".venv-train" / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"the training environment (XTuner's InternLM2 code) is absent at {python}")
    find = "import importlib.util as u; s = u.find_spec('xtuner'); print(s.submodule_search_locations[0] if s else '')"
    out = subprocess.run([str(python), "-c", find], capture_output=True, text=True, timeout=60).stdout.strip()
    code = Path(out) / "_lite" / "modelings" / "internlm2" if out else Path("/nonexistent")
    if not (code / "modeling_internlm2.py").is_file():
        pytest.skip(f"XTuner's InternLM2 modeling code is not at {code}")
    return code


@pytest.fixture(scope="module")
def internlm2_model(sentencepiece_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """InternLM2's architecture (its own remote code, copied into the folder at test time, never vendored), tiny
    and scripted like the tiny model, with the slow SentencePiece tokenizer whose chat tokens are not special."""
    import importlib.util
    import shutil
    import sys

    from tiny_model import script_weights, scripted_chain
    from transformers import AutoTokenizer

    code = internlm2_code()
    out, src = tmp_path_factory.mktemp("internlm2"), tmp_path_factory.mktemp("internlm2_code")
    for name in ("configuration_internlm2.py", "modeling_internlm2.py"):
        shutil.copy(code / name, src / name)  # save_pretrained copies them into the model folder
    for f in sentencepiece_model.path.iterdir():  # the tokenizer: files, remote code, config
        if f.name.startswith("tokeni") or f.name == "special_tokens_map.json":
            shutil.copy(f, out / f.name)
    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    # The two files as the package `internlm2_tiny` (the model file imports its config relatively).
    package = type(sys)("internlm2_tiny")
    package.__path__ = [str(src)]
    sys.modules["internlm2_tiny"] = package
    modules = {}
    for name in ("configuration_internlm2", "modeling_internlm2"):
        spec = importlib.util.spec_from_file_location(f"internlm2_tiny.{name}", src / f"{name}.py")
        assert spec is not None and spec.loader is not None
        modules[name] = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    config_module, module = modules["configuration_internlm2"], modules["modeling_internlm2"]
    import torch

    torch.manual_seed(0)
    config = config_module.InternLM2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id, attn_implementation="eager",
        auto_map={"AutoConfig": "configuration_internlm2.InternLM2Config",
                  "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
    )  # fmt: skip
    model = module.InternLM2ForCausalLM(config)
    script_weights(model.model.tok_embeddings.weight, model.output.weight, scripted_chain(tokenizer, 64))
    model.save_pretrained(out, safe_serialization=True)
    for name in ("configuration_internlm2.py", "modeling_internlm2.py"):  # save_pretrained may not copy them
        if not (out / name).is_file():
            shutil.copy(src / name, out / name)
    raw = json.loads((out / "config.json").read_text(encoding="utf-8"))
    raw["auto_map"] = config.auto_map
    (out / "config.json").write_text(json.dumps(raw), encoding="utf-8")
    return out


@pytest.mark.slow
def test_a_tiny_internlm2_model_loads_through_the_backend_and_replies_without_markers(
    internlm2_model: Path, sentencepiece_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XIYOU_MODEL_WUKONG", str(internlm2_model))
    backend = TransformersBackend(WUKONG, device="cpu", min_delta_interval_s=0)
    assert type(backend.loaded.model).__name__ == "InternLM2ForCausalLM"  # the remote code, not Llama
    assert sentencepiece_model.im_end_id in backend.loaded.stop_ids
    deltas = list(backend.stream(chat(), GenerationSettings(temperature=0)))
    assert "".join(deltas) == sentencepiece_model.reply and len(deltas) >= 5
