"""The local-weights backend on the tiny model, loaded through XIYOU_MODEL_WUKONG and the real loading code."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from tiny_model import TinyModel, at_model_speed

from xiyou.backends.base import BackendError, GenerationSettings
from xiyou.backends.factory import make_backend
from xiyou.backends.transformers_backend import INTERNLM2_CHAT_TEMPLATE, TransformersBackend
from xiyou.character import get_character

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
    assert text == f"<|im_start|>system\n{WUKONG.meta_instruction}<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n" + (
        "<|im_start|>assistant\n"
    )
    assert "bos_token" in INTERNLM2_CHAT_TEMPLATE  # InternLM2 puts <s> first when its tokenizer has one


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
    # ModelScope's real download code, pointed at a port where nothing listens (it retries a few times).
    monkeypatch.delenv("XIYOU_MODEL_WUKONG", raising=False)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "modelscope"))
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
    paced = TransformersBackend(WUKONG, tiny_model.path, min_delta_interval_s=2.0)
    started = time.perf_counter()
    deltas = list(paced.stream(chat(), GenerationSettings(temperature=0)))
    elapsed = time.perf_counter() - started
    assert "".join(deltas) == tiny_model.reply and all(deltas)
    assert deltas[0] and len(deltas) < tiny_model.reply_token_count  # the first at once, the rest together
    assert elapsed < 1.0  # the end of the reply cuts the 2 s wait short
