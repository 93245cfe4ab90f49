"""Reading a page under Streamlit's AppTest the way a person sees it: the conversation in the URL, a
per-conversation widget, the chat bubbles. Shared by the page tests (the fixtures that start pages are in
conftest.py: `page_store`, `hub`)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from xiyou.env import REPO_ROOT

HUB_APP = str(REPO_ROOT / "hub" / "app.py")
WIDGET_KINDS = ("multiselect", "slider", "number_input", "selectbox", "toggle", "text_input", "chat_input", "button")


def cid(at: AppTest) -> str:
    """The conversation id the page put in its URL (`?c=`)."""
    return at.query_params["c"][0] if isinstance(at.query_params["c"], list) else at.query_params["c"]


def widget(at: AppTest, prefix: str):
    """The widget whose key is `prefix` + "_" + the conversation id (per-conversation settings)."""
    key = f"{prefix}_{cid(at)}"
    for kind in WIDGET_KINDS:
        found = [w for w in at.get(kind) if getattr(w, "key", None) == key]
        if found:
            return found[0]
    raise KeyError(key)


def shown(node, kind: str = "markdown") -> list[str]:
    """The values of the `kind` elements shown in `node` itself, in order: not what its popovers hold until opened
    (a canon reply's 📖 passage, the ⋯ menu)."""
    out = []
    for child in getattr(node, "children", {}).values():
        child_kind = getattr(child, "type", None)
        if child_kind == kind:
            out.append(child.value)
        elif child_kind != "popover":
            out.extend(shown(child, kind))
    return out


def popovers(node) -> list:
    """The popovers inside `node` (a bubble's 📖 passage and ⋯ menu), with what they hold when opened."""
    out = []
    for child in getattr(node, "children", {}).values():
        if getattr(child, "type", None) == "popover":
            out.append(child)
        out.extend(popovers(child))
    return out


def bubbles(at: AppTest) -> list[tuple[str, str]]:
    """(name, text) of every chat bubble in the main area, in order; the text without the bubble's name line."""
    out = []
    for msg in at.main.get("chat_message"):
        texts = shown(msg)
        out.append((msg.name, "\n".join(texts[1:])))
    return out
