"""Local weights through `transformers`: the published demos' way of running a character.

- Weights: `XIYOU_MODEL_<ID>` (a local folder), else `modelscope.snapshot_download(model_id, revision)` into
  ModelScope's cache (downloaded once). A failed download raises a BackendError naming the model id, the env var
  to set and the download command. The revision should be a commit id: a branch (`master`) is downloaded only
  with XIYOU_ALLOW_UNPINNED_REVISION=1, since the folder's remote code runs.
- Loading: `trust_remote_code=True` (InternLM2), bf16 on CUDA, fp32 on CPU; one model per process per folder
  (`load_model` caches; the pages also hold the backend in `st.cache_resource`).
- Prompt: the tokenizer's chat template, or InternLM2's ChatML when the tokenizer has none; history that does
  not fit the context is dropped oldest turn first, never the system prompt.
- Generation: in a worker thread, streamed through a `TokenStreamer`: generate's thread only records the token
  ids, the reader decodes them incrementally (the original demos re-decoded the whole reply at every token, in
  generate's thread); deltas at most 60 a second (`DELTA_INTERVAL_S`); stops at
  `<|im_end|>` as well as EOS, at stop strings, and when cancelled; stop ids are never decoded into text, and the
  chat-format tokens (`<|im_end|>`, …) are made special after loading where a tokenizer config forgot to declare
  them (InternLM2's slow SentencePiece tokenizer). One generation at a time per model: concurrent visitors queue on
  a lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from xiyou.backends.base import BackendError, GenerationSettings, Message, validate_messages
from xiyou.backends.stops import StopFilter
from xiyou.character import Character
from xiyou.env import model_path, model_path_var

logger = logging.getLogger(__name__)

#: InternLM2-chat's ChatML, for tokenizers that carry no chat template of their own.
INTERNLM2_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
END_OF_TURN = "<|im_end|>"  # id 92542 in InternLM2's vocabulary
#: InternLM2's chat-format tokens. Some published tokenizer configs (the slow SentencePiece tokenizer of
#: internlm2-chat-7b) do not declare them special, so decoding would show them as text (a reply ending in
#: " <|im_end|>", saved into the history). After loading, those the vocabulary has are made special (no new ids).
CHAT_FORMAT_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|action_start|>",
    "<|action_end|>",
    "<|interpreter|>",
    "<|plugin|>",
)

#: Deltas are paced to a screen's refresh rate: after a delta the reader waits this long (cut short by the end
#: of the reply), and the tokens that arrived meanwhile come as one delta. A 7B model takes 20-50 ms a token, so
#: its every token is still a delta of its own; a faster model no longer wakes the reading thread, and the page
#: re-renders its Markdown, at every token (on a small CPU model that handoff costs about 10% of the speed, see
#: benchmarks/bench_streaming.py). The first delta is never held back.
DELTA_INTERVAL_S = 1 / 60


def download_command(character: Character) -> str:
    target = f"/models/{character.id}"
    return (
        f"modelscope download --model {character.model_id} --revision {character.revision} --local_dir {target} "
        f"&& export {model_path_var(character.id)}={target}"
    )


#: A revision that names one fixed snapshot: a commit id (hex), or a version tag such as v1.0.0. A branch such as
#: "master" moves: each new download may bring different weights and, worse, different Python code, which runs
#: (`trust_remote_code=True`: InternLM2 ships its own model code).
PINNED_REVISION = re.compile(r"[0-9a-fA-F]{7,64}|v?\d+(\.\d+)+")
ALLOW_UNPINNED_VAR = "XIYOU_ALLOW_UNPINNED_REVISION"


def revision_is_pinned(revision: str) -> bool:
    return PINNED_REVISION.fullmatch(revision.strip()) is not None


def pin_command(character: Character) -> str:
    """How to find the commit a branch points to now (ModelScope models are git repositories)."""
    return f"git ls-remote https://www.modelscope.cn/{character.model_id}.git {character.revision}"


def check_revision(character: Character) -> None:
    """Refuse to download a moving branch whose remote code would run, unless XIYOU_ALLOW_UNPINNED_REVISION=1."""
    if revision_is_pinned(character.revision):
        return
    if os.environ.get(ALLOW_UNPINNED_VAR, "").strip().lower() in ("1", "true", "yes"):
        logger.warning(
            "%s: downloading %s at the branch %r (not pinned to a commit); its remote code runs (%s is set)",
            character.id, character.model_id, character.revision, ALLOW_UNPINNED_VAR,
        )  # fmt: skip
        return
    raise BackendError(
        f"{character.name}'s weights ({character.model_id}) would be downloaded at the branch "
        f"{character.revision!r}, which can change at any time, and the model folder's own Python code runs when it "
        f"loads (trust_remote_code). Pin it: find the commit with `{pin_command(character)}` and set revision = "
        f'"<that commit id>" in xiyou/characters/{character.id}.toml; or set {model_path_var(character.id)} to a '
        f"folder you checked; or accept the branch with {ALLOW_UNPINNED_VAR}=1."
    )


def resolve_weights(character: Character) -> Path:
    """The folder holding `character`'s weights: XIYOU_MODEL_<ID>, else a ModelScope download (cached)."""
    var = model_path_var(character.id)
    local = model_path(character.id)
    if local is not None:
        if not (local / "config.json").is_file():
            raise BackendError(
                f"{var}={local}: no model there (expected a folder with config.json, the tokenizer and the weights "
                f"of {character.model_id}). Fix the path, or unset {var} to download the weights from ModelScope."
            )
        return local
    try:
        from modelscope import snapshot_download
    except ImportError as e:
        raise BackendError(
            f"the modelscope package is missing, so the weights of {character.model_id} cannot be downloaded; "
            f"pip install modelscope, or set {var} to a local folder with the weights"
        ) from e
    with contextlib.suppress(Exception):  # already downloaded: no network needed
        return Path(snapshot_download(character.model_id, revision=character.revision, local_files_only=True))
    check_revision(character)
    try:
        return Path(snapshot_download(character.model_id, revision=character.revision))
    except Exception as e:  # network, auth, missing repo: all mean "no weights"; say what to do
        raise BackendError(
            f"could not download the weights of {character.name} ({character.model_id}, revision "
            f"{character.revision}) from ModelScope: {type(e).__name__}: {str(e)[:300]}. "
            f"Set {var} to a local folder with the weights, e.g. download them once with: "
            f"`{download_command(character)}`; or run the app offline with XIYOU_BACKEND=canon."
        ) from e


@dataclasses.dataclass
class LoadedModel:
    """A model and tokenizer in memory, with what generation needs to know about them."""

    path: Path
    model: Any
    tokenizer: Any
    device: str
    stop_ids: list[int]
    context_length: int
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # one generation at a time


_loaded: dict[tuple[str, str], LoadedModel] = {}
_loading_lock = threading.Lock()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: str | Path, device: str | None = None) -> LoadedModel:
    """Load (once per process) the model in `path`: bf16 on CUDA, fp32 on CPU, remote code trusted."""
    path = Path(path).resolve()
    device = device or default_device()
    key = (str(path), device)
    with _loading_lock:
        if key in _loaded:
            return _loaded[key]
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
            model = AutoModelForCausalLM.from_pretrained(
                path, trust_remote_code=True, torch_dtype=dtype, low_cpu_mem_usage=True
            )
        except Exception as e:
            raise BackendError(
                f"could not load the model in {path}: {type(e).__name__}: {str(e)[:300]}. "
                "Check that the folder holds a complete model (config.json, tokenizer files, weights)."
            ) from e
        model.to(device).eval()
        mark_chat_tokens_special(tokenizer)
        loaded = LoadedModel(path, model, tokenizer, device, _stop_ids(model, tokenizer), _context_length(model))
        _loaded[key] = loaded
        return loaded


def mark_chat_tokens_special(tokenizer: Any) -> list[str]:
    """Make the chat-format tokens the vocabulary already has special (skipped when decoding), adding none;
    returns those that were not special before."""
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_tokens)
    missing = [t for t in CHAT_FORMAT_TOKENS if t in vocab and t not in special]
    if missing:
        size = len(tokenizer)
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_additional_special_tokens=False)
        if len(tokenizer) != size:  # never: each token is in the vocabulary; a changed size would misalign the model
            raise BackendError(f"marking {missing} special changed the tokenizer's size ({size} -> {len(tokenizer)})")
    return missing


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.append(value)
        elif value:
            ids.extend(int(v) for v in value)
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        ids.append(end_of_turn)
    return list(dict.fromkeys(ids))


def _context_length(model: Any) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 4096)


class TokenStreamer:
    """The `streamer` of `model.generate` (its protocol: `put(ids)`, then `end()`), read from another thread.

    Generate's thread does the least it can at each token: it records the new ids and flags their arrival. The
    reader decodes, when it takes them, all the ids that arrived since its last take, incrementally: fast
    tokenizers with `tokenizers`' own incremental decoder (`DecodeStream`, in Rust), others (InternLM2's
    sentencepiece tokenizer) by decoding a small window of recent ids. Text is released once it ends in a whole
    character, so multi-byte characters split over tokens come out whole. (transformers' `TextIteratorStreamer`
    decodes in generate's thread at every token, re-decoding all the text since the last line break.)
    """

    def __init__(self, tokenizer: Any, skip_ids: Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        #: ids never decoded into text (the stop ids: generate hands over the one it stopped at)
        self._skip = frozenset(skip_ids)
        fast = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        try:
            from tokenizers.decoders import DecodeStream
        except ImportError:  # tokenizers < 0.21.1
            DecodeStream = None
        self._fast = fast
        self._decode_stream = DecodeStream(skip_special_tokens=True) if fast is not None and DecodeStream else None
        self.arrived = threading.Event()  # set when ids arrived, or the stream ended, since the last take
        self.ended = threading.Event()  # set once generate has put its last ids
        self._prompt_skipped = False
        self._ids: list[int] = []  # appended by generate's thread only
        self._taken = 0  # how many ids the reader has decoded
        self._prefix = 0  # window decoding (slow tokenizers): start of the window decoded for context,
        self._read = 0  # end of what has been released,
        self._before = ""  # and the text of the window [_prefix, _read)

    # --- generate's thread ---------------------------------------------------------------------------------
    def put(self, value) -> None:
        """Record new token ids (a tensor); the first call brings the prompt, which is skipped."""
        if not self._prompt_skipped:
            self._prompt_skipped = True
            return
        ids = value.reshape(-1).tolist()
        if self._skip:
            ids = [i for i in ids if i not in self._skip]
        self._ids.extend(ids)
        if not self.arrived.is_set():
            self.arrived.set()

    def end(self) -> None:
        self.ended.set()
        self.arrived.set()

    # --- the reader ----------------------------------------------------------------------------------------
    def take(self) -> tuple[str, bool]:
        """The text of the ids that arrived since the last take, and whether the stream has ended (the text then
        includes all that was left)."""
        self.arrived.clear()
        ended = self.ended.is_set()  # before counting the ids: once ended, every id is in
        n = len(self._ids)
        new, self._taken = self._ids[self._taken : n], n
        if self._decode_stream is not None:
            pieces = [self._decode_stream.step(self._fast, i) for i in new]
            return "".join(p for p in pieces if p), ended
        return self._window_text(n, ended), ended

    def _decode(self, start: int, stop: int) -> str:
        return self.tokenizer.decode(self._ids[start:stop], skip_special_tokens=True)

    def _window_text(self, n: int, ended: bool) -> str:
        """Slow tokenizers: the new text of ids[:n], decoding the window from the last released piece's start."""
        text = self._decode(self._prefix, n)
        if len(text) <= len(self._before) or (text.endswith("\ufffd") and not ended):  # nothing new, or a cut char
            return ""
        released = text[len(self._before) :]
        self._prefix, self._read = self._read, n
        self._before = self._decode(self._prefix, self._read) if self._prefix < self._read else ""
        return released

    def __iter__(self) -> Iterator[str]:
        """Each take's text until the end: for a reader that needs no pacing, cancelling or timeout."""
        while True:
            self.arrived.wait()
            text, ended = self.take()
            if text:
                yield text
            if ended:
                return


class _StopOnEvent:
    """A StoppingCriteria that ends generation when any of the events is set (cancel, stop string, consumer gone)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events
        self._answers: dict[tuple, Any] = {}  # the same few tensors, rather than a new one at every token

    def __call__(self, input_ids, scores, **kwargs):
        key = (any(e.is_set() for e in self.events), input_ids.shape[0], input_ids.device)
        answer = self._answers.get(key)
        if answer is None:
            import torch

            answer = self._answers[key] = torch.full((key[1],), key[0], dtype=torch.bool, device=key[2])
        return answer


class TransformersBackend:
    """A character on local weights. Creating it loads the model (or raises a BackendError saying what to do)."""

    def __init__(
        self,
        character: Character,
        path: str | Path | None = None,
        device: str | None = None,
        *,
        queue_timeout_s: float = 600.0,
        generate_overrides: dict[str, Any] | None = None,
        min_delta_interval_s: float = DELTA_INTERVAL_S,
    ) -> None:
        self.character = character
        self.loaded = load_model(Path(path) if path is not None else resolve_weights(character), device)
        self.queue_timeout_s = queue_timeout_s
        #: extra keyword arguments for `generate` (benchmarks force a length with min_new_tokens)
        self.generate_overrides = dict(generate_overrides or {})
        #: at most one delta per this many seconds (see DELTA_INTERVAL_S); 0 = every token as it comes
        self.min_delta_interval_s = min_delta_interval_s
        self.label = f"transformers: {self.loaded.path} ({self.loaded.device})"

    # --- prompt -----------------------------------------------------------------------------------------
    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The token ids of the prompt for `messages`, ending with the assistant's generation prompt."""
        tok = self.loaded.tokenizer
        template = None if getattr(tok, "chat_template", None) else INTERNLM2_CHAT_TEMPLATE
        ids = tok.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages],
            chat_template=template,
            add_generation_prompt=True,
            tokenize=True,
        )
        return list(ids)

    def max_new_tokens(self, settings: GenerationSettings) -> int:
        """The reply length actually allowed: the setting, capped at half the model's context."""
        return max(1, min(settings.max_new_tokens, self.loaded.context_length // 2))

    def fit_messages(self, messages: Sequence[Message], max_new_tokens: int) -> list[Message]:
        """Drop the oldest turns until the prompt plus `max_new_tokens` fits the context; keep the system prompt."""
        return self._fit(messages, max_new_tokens)[0]

    def _fit(self, messages: Sequence[Message], max_new_tokens: int) -> tuple[list[Message], list[int]]:
        budget = self.loaded.context_length - max_new_tokens
        n_system = 0
        while n_system < len(messages) and messages[n_system]["role"] == "system":
            n_system += 1
        head, turns = list(messages[:n_system]), list(messages[n_system:])
        while len(ids := self.prompt_ids(head + turns)) > budget:
            if len(turns) <= 1:
                raise BackendError(
                    f"the message is too long for {self.character.name}'s model: the system prompt and the last "
                    f"message take more than {budget} tokens (context {self.loaded.context_length}, "
                    f"{max_new_tokens} kept for the reply). Send a shorter message or lower max new tokens."
                )
            turns.pop(0)
            while len(turns) > 1 and turns[0]["role"] == "assistant":  # a conversation starts with the user
                turns.pop(0)
        return head + turns, ids

    # --- generation -------------------------------------------------------------------------------------
    def _generate_kwargs(self, input_ids: list[int], settings: GenerationSettings, max_new: int) -> dict[str, Any]:
        import torch

        tok = self.loaded.tokenizer
        ids = torch.tensor([input_ids], device=self.loaded.device)
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "max_new_tokens": max_new,
            "eos_token_id": self.loaded.stop_ids,
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else self.loaded.stop_ids[0],
            "repetition_penalty": settings.repetition_penalty,
        }
        if settings.temperature > 0:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
            if settings.top_k is not None:
                kwargs["top_k"] = settings.top_k
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        kwargs.update(self.generate_overrides)
        return kwargs

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Yield the reply's text deltas as the model produces them."""
        validate_messages(messages)
        return self._stream(list(messages), settings, cancel or threading.Event())

    def _stream(self, messages: list[Message], settings: GenerationSettings, cancel: threading.Event) -> Iterator[str]:
        from transformers import StoppingCriteriaList

        max_new = self.max_new_tokens(settings)
        input_ids = self._fit(messages, max_new)[1]
        if not self.loaded.lock.acquire(timeout=self.queue_timeout_s):
            raise BackendError(
                f"{self.character.name}'s model is busy with other replies (waited {self.queue_timeout_s:.0f} s); "
                "try again in a moment."
            )
        worker: threading.Thread | None = None
        done = threading.Event()
        try:
            errors: list[BaseException] = []
            streamer = TokenStreamer(self.loaded.tokenizer, skip_ids=self.loaded.stop_ids)
            kwargs = self._generate_kwargs(input_ids, settings, max_new)
            kwargs.update(streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopOnEvent(cancel, done)]))

            def work() -> None:
                import torch

                try:
                    if settings.seed is not None:
                        torch.manual_seed(settings.seed)
                    with torch.inference_mode():
                        self.loaded.model.generate(**kwargs)
                except BaseException as e:  # reported to the consumer below
                    errors.append(e)
                finally:
                    streamer.end()  # generate ends it too, but not when it fails

            worker = threading.Thread(target=work, name=f"generate-{self.character.id}", daemon=True)
            worker.start()
            stops = StopFilter(settings.stop)
            while not cancel.is_set():
                if not streamer.arrived.wait(0.5):  # wake up now and then to see `cancel`
                    continue
                delta, finished = streamer.take()  # a slow reader gets all that piled up, in one piece
                out = stops.push(delta)
                if out:
                    yield out
                if stops.stopped or finished:
                    break
                if out and self.min_delta_interval_s > 0:  # let tokens pile up; the end cuts the wait short
                    streamer.ended.wait(self.min_delta_interval_s)
            else:
                return  # cancelled
            if errors:
                e = errors[0]
                raise BackendError(f"{self.label}: generation failed: {type(e).__name__}: {e}") from e
            tail = stops.flush()
            if tail:
                yield tail
        finally:
            done.set()  # stops the generation at its next token if it is still running
            if worker is not None:
                worker.join()
            self.loaded.lock.release()
