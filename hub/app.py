"""The app for every conversation: group rooms and private chats with the four. Run with `make run`
(or `streamlit run hub/app.py`)."""

from xiyou.ui.app import main

main()
