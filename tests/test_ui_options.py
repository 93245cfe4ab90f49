"""Settings every page sets in code (so they hold wherever Streamlit starts), and error notices on public pages."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from xiyou.env import REPO_ROOT
from xiyou.ui.options import PAGE_OPTIONS, public_error

NOTICE = "cannot load the model from /home/ops/models/wukong/config.json: permission denied"


def test_pages_set_the_public_options_even_without_the_config_file(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XIYOU_BACKEND", "canon")
    monkeypatch.setenv("XIYOU_NOVEL", str(tmp_path / "missing.txt"))
    monkeypatch.setenv("XIYOU_DATA_DIR", str(tmp_path / "data"))
    for key in PAGE_OPTIONS:
        st.set_option(key, "auto" if key == "client.toolbarMode" else "full")  # as Streamlit's defaults
    AppTest.from_file(str(REPO_ROOT / "apps" / "wukong" / "app.py"), default_timeout=60).run()
    assert {key: st.get_option(key) for key in PAGE_OPTIONS} == {
        "client.showErrorDetails": "none",
        "client.toolbarMode": "viewer",
    }


@pytest.mark.parametrize(
    ("persist", "address", "public"),
    [("1", "127.0.0.1", False), ("0", "127.0.0.1", True), ("1", "0.0.0.0", True)],
)
def test_server_paths_show_only_on_a_private_page(monkeypatch, persist: str, address: str, public: bool) -> None:
    monkeypatch.setenv("XIYOU_PERSIST", persist)
    monkeypatch.setattr(st, "get_option", lambda key: address if key == "server.address" else None)
    shown = public_error(NOTICE)
    if public:
        assert shown == "cannot load the model from …/config.json: permission denied"
    else:
        assert shown == NOTICE
