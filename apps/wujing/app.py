"""悟净-Chat: the chat app of one character. Run: `streamlit run apps/wujing/app.py` (see the README)."""

from xiyou.ui.chat import chat_page

chat_page("wujing")
