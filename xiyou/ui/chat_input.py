"""The chat input's live character counter, and a signal the moment the person starts typing.

Streamlit's `st.chat_input` tells the app nothing until a message is sent, and its own `max_chars` refuses a paste
that would go over the limit as a whole: the pasted text silently vanishes. `watch_chat_input()` mounts a small
component (Streamlit's components v2: a few lines of JavaScript run in the app's page, no build step, no iframe)
that watches the page's chat input box:

- a live `n / max` counter beside the send button while the box holds text, red beyond the limit (the box keeps
  everything; a message over the limit comes back in an edit box when sent, so nothing typed is lost);
- with `watch=True`, the first keystroke calls `on_typing` (one rerun; while `watch` stays on, at most one more per
  `REFIRE_MS` of typing, never one per keystroke). The room passes its auto-banter's state, so typing stops banter.

It draws nothing of its own, and does nothing where the page's chat input cannot be found.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

#: While `watch` stays on after a signal (the rerun it asked for has not redrawn the page yet), typing signals
#: again at most this often, in milliseconds.
REFIRE_MS = 1500

_JS = """
const BOX = 'textarea[data-testid="stChatInputTextArea"]';

function counterFor(doc, s) {
  const box = doc.querySelector(BOX);
  if (!box) return null;
  const send = box.closest('[data-testid="stChatInput"]')?.querySelector('[data-testid="stChatInputSubmitButton"]');
  if (!send) return null;
  if (!s.counter || !s.counter.isConnected || s.counter.nextSibling !== send) {
    if (s.counter) s.counter.remove();
    s.counter = doc.createElement('span');
    s.counter.dataset.testid = 'xiyouChatCounter';
    s.counter.setAttribute('aria-live', 'polite');
    s.counter.style.cssText = 'font-size:0.75rem;white-space:nowrap;align-self:center;margin-right:0.5rem;';
    send.parentElement.insertBefore(s.counter, send);
  }
  return { box, counter: s.counter };
}

function update(doc, s) {
  const found = counterFor(doc, s);
  if (!found) return;
  const n = [...found.box.value].length;  // characters as Python counts them (an emoji is one)
  const over = n > s.max;
  found.counter.textContent = n ? `${n} / ${s.max}` : '';
  found.counter.title = over ? s.overText : '';
  found.counter.style.color = over ? 'rgb(255, 43, 43)' : 'inherit';
  found.counter.style.opacity = over ? '1' : '0.6';
  found.counter.style.fontWeight = over ? '600' : 'normal';
}

export default function ({ data, setTriggerValue, parentElement }) {
  try {
    const doc = parentElement.ownerDocument;
    const win = doc.defaultView;
    const s = (win.__xiyouChatInput ||= { lastSignal: 0 });
    Object.assign(s, data, { signal: setTriggerValue, owner: parentElement });
    // it draws nothing of its own: take its place out of the layout (no gap under the input)
    const holder = (parentElement.host || parentElement).closest('[data-testid="stElementContainer"]');
    if (holder) holder.style.display = 'none';
    if (!s.started) {
      s.onInput = (event) => {
        if (!event.target.matches || !event.target.matches(BOX)) return;
        update(doc, s);
        const now = Date.now();
        if (s.watch && now - s.lastSignal > s.refireMs) {
          s.lastSignal = now;
          s.signal('typing', now);
        }
      };
      doc.addEventListener('input', s.onInput, true);
      doc.addEventListener('compositionstart', s.onInput, true);
      // the box is also emptied or replaced by the page itself (a message sent, another conversation opened)
      s.timer = win.setInterval(() => update(doc, s), 250);
      s.started = true;
    }
    if (!s.watch) s.lastSignal = 0;
    update(doc, s);
    return () => {
      if (s.owner !== parentElement) return;  // another mount (a new conversation's page) has taken over
      doc.removeEventListener('input', s.onInput, true);
      doc.removeEventListener('compositionstart', s.onInput, true);
      win.clearInterval(s.timer);
      if (s.counter) s.counter.remove();
      delete win.__xiyouChatInput;
    };
  } catch (error) {
    console.warn('chat input counter unavailable:', error);  // the page works without it
  }
}
"""

_component = st.components.v2.component("xiyou_chat_input", js=_JS)


def watch_chat_input(
    key: str,
    max_chars: int,
    *,
    watch: bool = False,
    on_typing: Callable[[], None] | None = None,
    over_text: str = "",
) -> None:
    """Mount the counter (and, with `watch`, the typing signal) for the page's chat input. `over_text` is the
    counter's tooltip beyond the limit."""
    key = key.replace("_", "-")  # a component's key may not hold "__" (conversation ids may)
    data = {"max": max_chars, "watch": bool(watch and on_typing), "refireMs": REFIRE_MS, "overText": over_text}
    _component(key=key, data=data, on_typing_change=on_typing or (lambda: None), width="content", height="content")
