"""OpenXLab's app entry point (`app.py`). Works both ways OpenXLab may start it:

- `python app.py`: runs openxlab/start.py (the character's Streamlit app on 0.0.0.0:7860);
- `streamlit run app.py`: draws the character's page directly (character from XIYOU_CHARACTER, default wukong).

Either way conversations are kept in each visitor's session only (XIYOU_PERSIST=0 unless set).
"""

import os
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# A public demo: each visitor's chats stay in his browser session, never stored, never listed to another visitor
# (set XIYOU_PERSIST=1 to store them, e.g. for a private deployment).
os.environ.setdefault("XIYOU_PERSIST", "0")


def _inside_streamlit() -> bool:
    try:
        from streamlit import runtime

        return runtime.exists()
    except ImportError:
        return False


if _inside_streamlit():
    sys.path.insert(0, str(HERE.parent))  # the repository root, so `xiyou` imports without being installed
    from xiyou.ui.chat import chat_page

    chat_page(os.environ.get("XIYOU_CHARACTER", "wukong").strip().lower())
elif __name__ == "__main__":
    runpy.run_path(str(HERE / "start.py"), run_name="__main__")
