"""The hub page against a hostile server (issue 15 item 1): its base_url carries `user:password@` and it echoes
the API key back in its error body. A visitor sees neither, on page load (the member list shows each backend's
label) nor in the error notice after a message."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import streamlit as st
from scripted_openai import Fault, ScriptedOpenAI
from streamlit.testing.v1 import AppTest

from xiyou.env import REPO_ROOT

KEY = "plain-hostile-key-31415926"
PASSWORD = "pa55w0rd-secret"
SHOWN = ("markdown", "caption", "error", "warning", "info", "text", "code", "exception", "toast")


def page_text(at: AppTest) -> str:
    """Every piece of text the page shows, main area and sidebar."""
    return "\n".join(str(getattr(e, "value", "")) for kind in SHOWN for e in at.get(kind))


@pytest.mark.slow
def test_the_hub_shows_neither_the_key_nor_the_url_password(novel_path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    monkeypatch.setenv("XIYOU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOSTILE_KEY", KEY)
    st.cache_resource.clear()
    with ScriptedOpenAI() as server:
        endpoints = tmp_path / "endpoints.toml"
        url = server.base_url.replace("http://", f"http://maitreya:{PASSWORD}@")
        endpoints.write_text(
            f'[bajie]\nbase_url = "{url}"\nmax_retries = 0\ntimeout = 5\n'
            f'[wukong]\nbase_url = "{server.base_url}"\napi_key_env = "HOSTILE_KEY"\nmax_retries = 0\ntimeout = 5\n',
            encoding="utf-8",
        )
        monkeypatch.setenv("XIYOU_ENDPOINTS", str(endpoints))
        at = AppTest.from_file(str(REPO_ROOT / "hub" / "app.py"), default_timeout=120).run()
        assert not at.exception, at.exception
        loaded = page_text(at)
        assert f"openai: bajie @ {server.base_url}" in loaded  # the member list names the server …
        assert PASSWORD not in loaded and "maitreya" not in loaded  # … without its password

        server.queue_faults(*[Fault.echo_headers(401)] * 10)
        at.chat_input[0].set_value("八戒、悟空，你们在吗？").run()
        sent = {r.headers.get("authorization", "") for r in server.chat_requests()}
    basic = base64.b64encode(f"maitreya:{PASSWORD}".encode()).decode()
    assert sent == {f"Bearer {KEY}", f"Basic {basic}"}  # both secrets went out, and came back in the bodies …
    assert not at.exception, at.exception
    errors = [e.value for e in at.get("error")]
    assert sum("HTTP 401" in e for e in errors) == 2, errors  # … both refusals are shown …
    shown = page_text(at)
    assert KEY not in shown and PASSWORD not in shown and basic not in shown  # … with no secret
    st.cache_resource.clear()
