"""The hub: 师徒四人 in one room. Run with `make run` (or `streamlit run hub/app.py`)."""

from xiyou.ui.hub import main

main()
