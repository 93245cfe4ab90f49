"""The room on real servers: two `transformers serve` processes (tiny model) as three characters.

- 孙悟空 on server A (pinned to the tiny model's path, so its model name is that path);
- 猪八戒 and 沙悟净 share server B, started without a pinned model: it loads whatever local path a request
  names in `model`, so two names (the model directory and a symlink to it) reach one server, as two LoRA
  adapters of one LMDeploy server would.

Server A is killed mid-conversation: 悟空 reports an error (red status, a notice, no chat line), the other two
keep answering. The servers are configured through an endpoints file, the way a user would.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from xiyou.room import MemberFailed, Room, TurnEnded
from xiyou.room.lineup import build_lineup
from xiyou.room.transcript import PERSON

pytestmark = pytest.mark.slow


def test_three_characters_on_two_servers_and_one_server_dies(tiny_model, tmp_path: Path, monkeypatch) -> None:
    from servers import transformers_serve

    monkeypatch.delenv("XIYOU_ENDPOINTS", raising=False)
    alias = tmp_path / "wujing-adapter"
    alias.symlink_to(tiny_model.path, target_is_directory=True)
    with transformers_serve(tiny_model.path) as server_a, transformers_serve(None) as server_b:
        endpoints = tmp_path / "endpoints.toml"
        endpoints.write_text(
            f'[wukong]\nbase_url = "{server_a.base_url}"\nmodel = "{server_a.model}"\ntimeout = 60\n'
            f'[bajie]\nbase_url = "{server_b.base_url}"\nmodel = "{tiny_model.path}"\ntimeout = 60\n'
            f'[wujing]\nbase_url = "{server_b.base_url}"\nmodel = "{alias}"\ntimeout = 60\nmax_retries = 0\n',
            encoding="utf-8",
        )
        lineup = build_lineup(["wukong", "bajie", "wujing"], endpoints)
        assert lineup.mode == "endpoints" and all(s.kind == "openai" for s in lineup.seats.values())
        members = lineup.members(["wukong", "bajie", "wujing"])
        for m in members:
            m.settings = m.generation_settings().replace(max_new_tokens=48, temperature=0.0)
        room = Room(members, policy="all", banter_turns=0)

        room.say("徒弟们，前面可有妖怪？")
        events = list(room.run())
        assert not [e for e in events if isinstance(e, MemberFailed)], [
            e.notice.message for e in events if isinstance(e, MemberFailed)
        ]
        spoken = [(e.speaker, e.entry.text) for e in events if isinstance(e, TurnEnded)]
        assert [s for s, _ in spoken] == ["wukong", "bajie", "wujing"]
        for _, text in spoken:
            assert tiny_model.reply in text  # the real model's reply, through the real server and client

        server_a.proc.kill()  # 悟空's server dies mid-conversation
        room.say("再说一遍？")
        events = list(room.run())
        failures = [e for e in events if isinstance(e, MemberFailed)]
        assert [f.speaker for f in failures] == ["wukong"]
        assert (
            "孙悟空" in failures[0].notice.message and server_a.base_url.split("/v1")[0] in failures[0].notice.message
        )
        assert room.status["wukong"].failing and not room.status["bajie"].failing and not room.status["wujing"].failing
        after = [e.speaker for e in room.entries[-2:]]
        assert after == ["bajie", "wujing"]
        assert all(
            e.speaker != "wukong"
            for e in room.entries[room.entries.index(next(e for e in room.entries if e.text == "再说一遍？")) :]
        )
        assert all(tiny_model.reply in e.text for e in room.entries if e.speaker != PERSON)
        # both names really reached server B: it lists both as loaded models
        with urllib.request.urlopen(f"{server_b.base_url}/models", timeout=10) as r:
            listed = {m["id"] for m in json.load(r)["data"]}
        assert {str(tiny_model.path), str(alias)} <= listed
