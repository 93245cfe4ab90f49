"""The test helpers themselves: the tiny model loads in both transformers versions and stops where it should."""

from __future__ import annotations

import json
import urllib.request

import pytest
from tiny_model import IM_END, TinyModel


def test_tiny_model_loads_and_says_its_reply_then_stops_at_im_end(tiny_model: TinyModel) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model.path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model.path)
    assert tok.convert_tokens_to_ids(IM_END) == tiny_model.im_end_id
    messages = [{"role": "system", "content": "你是孙悟空"}, {"role": "user", "content": "大圣，你好"}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>system\n你是孙悟空<|im_end|>\n")
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    # EOS only (the model's own generation config): it runs past <|im_end|> into AFTER.
    out = model.generate(ids, max_new_tokens=60, do_sample=False)
    assert tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True) == tiny_model.reply + tiny_model.after
    # Also stopping at <|im_end|>: exactly the reply, also when sampling.
    out = model.generate(ids, max_new_tokens=60, do_sample=True, temperature=1.0, eos_token_id=[tiny_model.im_end_id])
    new = out[0, ids.shape[1] :].tolist()
    assert new[-1] == tiny_model.im_end_id and len(new) == tiny_model.reply_token_count + 1
    assert tok.decode(new, skip_special_tokens=True) == tiny_model.reply


@pytest.mark.slow
def test_transformers_serve_serves_the_tiny_model(tiny_server, tiny_model: TinyModel) -> None:
    body = {"model": tiny_server.model, "messages": [{"role": "user", "content": "你好"}], "max_tokens": 60}
    req = urllib.request.Request(
        f"{tiny_server.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        reply = json.loads(r.read())["choices"][0]["message"]["content"]
    assert reply == tiny_model.reply + tiny_model.after
