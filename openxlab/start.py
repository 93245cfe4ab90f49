"""OpenXLab entry: run one character's chat app on 0.0.0.0:7860, as OpenXLab expects.

    python openxlab/start.py wukong          # or: XIYOU_CHARACTER=wukong python openxlab/start.py

The character comes from the first argument, else XIYOU_CHARACTER, else wukong. XIYOU_OPENXLAB_ADDRESS and
XIYOU_OPENXLAB_PORT override the address and port (e.g. 127.0.0.1 to try it locally). The app runs with the
repository root as working directory (so .streamlit/config.toml applies) and on PYTHONPATH (so `xiyou` imports
without being installed). Weights: XIYOU_MODEL_<ID>, else downloaded once from ModelScope.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHARACTER = "wukong"


def command(character_id: str, address: str = "0.0.0.0", port: int = 7860) -> list[str]:
    """The `streamlit run` command line for `character_id`'s app."""
    app = REPO_ROOT / "apps" / character_id / "app.py"
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", address, "--server.port", str(port), "--server.headless", "true",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    character_id = (argv[0] if argv else os.environ.get("XIYOU_CHARACTER", DEFAULT_CHARACTER)).strip().lower()
    known = sorted(p.parent.name for p in (REPO_ROOT / "apps").glob("*/app.py"))
    if character_id not in known:
        print(f"openxlab/start.py: unknown character {character_id!r}; use one of: {', '.join(known)}", file=sys.stderr)
        return 2
    address = os.environ.get("XIYOU_OPENXLAB_ADDRESS", "0.0.0.0")
    port = int(os.environ.get("XIYOU_OPENXLAB_PORT", "7860"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.call(command(character_id, address, port), cwd=REPO_ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
