"""八戒-Chat: the chat app of one character. Run: `streamlit run apps/bajie/app.py` (see the README)."""

from xiyou.ui.chat import chat_page

chat_page("bajie")
