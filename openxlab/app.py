"""OpenXLab's app entry point (`app.py`). Works both ways OpenXLab may start it:

- `python app.py`: runs openxlab/start.py (the character's Streamlit app on 0.0.0.0:7860);
- `streamlit run app.py`: draws the character's page directly (character from XIYOU_CHARACTER, default wukong).
"""

import os
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


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
