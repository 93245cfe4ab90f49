"""三藏-Chat: the chat app of one character. Run: `streamlit run apps/sanzang/app.py` (see the README)."""

from xiyou.ui.chat import chat_page

chat_page("sanzang")
