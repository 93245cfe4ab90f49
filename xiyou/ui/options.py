"""Streamlit settings every page needs, set in code, and what a public page may show of an error.

`.streamlit/config.toml` holds the same settings, but Streamlit reads it only when started in the repository
root; a page started from anywhere else (an OpenXLab container, `streamlit run /abs/path/app.py`) would show full
tracebacks and the Deploy toolbar to the public. `apply_page_options()` sets them at the top of every page run.

A page is public when it keeps conversations in the session only (`XIYOU_PERSIST=0`, the public demos) or
Streamlit listens on a non-loopback address; then error notices show file names without their folders.
"""

from __future__ import annotations

import re

import streamlit as st

from xiyou.store import persist_enabled

#: Settings that hold for every page, whatever the working directory Streamlit started in.
PAGE_OPTIONS: dict[str, object] = {
    "client.showErrorDetails": "none",  # the public sees a generic message; details go to the server's console
    "client.toolbarMode": "viewer",  # no developer menu (rerun, clear cache, deploy)
}

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: An absolute path of two or more parts (POSIX or Windows), e.g. /home/me/models/wukong or C:\models\wukong.
_PATH = re.compile(r"(?<![\w:/.])(?:/|[A-Za-z]:\\)(?:[^\s/\\'\"]+[/\\])+([^\s/\\'\",;:)]+)")


def apply_page_options() -> None:
    for key, value in PAGE_OPTIONS.items():
        if st.get_option(key) != value:
            st.set_option(key, value)


def is_public() -> bool:
    address = str(st.get_option("server.address") or "")
    return not persist_enabled() or (address not in ("", *_LOOPBACK))


def public_error(message: str) -> str:
    """`message` as a notice may show it: on a public page, server paths become …/file-name."""
    if not is_public():
        return message
    return _PATH.sub(lambda m: f"…/{m.group(1)}", message)
