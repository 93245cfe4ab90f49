"""OpenXLab entry: run one character's chat app on 0.0.0.0:7860, as OpenXLab expects.

    python openxlab/start.py wukong          # or: XIYOU_CHARACTER=wukong python openxlab/start.py

The character comes from the first argument, else XIYOU_CHARACTER (unset or empty: wukong). XIYOU_OPENXLAB_ADDRESS
and XIYOU_OPENXLAB_PORT override the address and port (e.g. 127.0.0.1 to try it locally). The app runs with the
repository root as working directory and on PYTHONPATH (so `xiyou` imports without being installed); the public
settings of .streamlit/config.toml (no error details, viewer toolbar, no usage statistics) are also passed on the
command line, so they hold wherever Streamlit looks for its config. Weights: XIYOU_MODEL_<ID>, else downloaded once
from ModelScope.

Streamlit runs in its own process group: SIGTERM, SIGINT or SIGHUP sent to this script (a container stopping)
stop it too (SIGTERM, then SIGKILL after 10 s), so it never keeps the port as an orphan. The exit code is
Streamlit's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a file: `xiyou` importable without being installed
    sys.path.insert(0, str(REPO_ROOT))

from xiyou.process import Process, forward_signals  # noqa: E402

DEFAULT_CHARACTER = "wukong"
DEFAULT_PORT = 7860
#: The settings of .streamlit/config.toml a public page depends on, given on the command line as well.
PUBLIC_OPTIONS = (
    "--client.showErrorDetails", "none", "--client.toolbarMode", "viewer", "--browser.gatherUsageStats", "false",
)  # fmt: skip


class StartError(ValueError):
    """A setting of the start script is wrong; the message names it and says what to do."""


def command(character_id: str, address: str = "0.0.0.0", port: int = DEFAULT_PORT) -> list[str]:
    """The `streamlit run` command line for `character_id`'s app."""
    app = REPO_ROOT / "apps" / character_id / "app.py"
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", address, "--server.port", str(port), "--server.headless", "true", *PUBLIC_OPTIONS,
    ]  # fmt: skip


def settings(argv: list[str], environ: dict[str, str]) -> tuple[str, str, int]:
    """(character id, address, port) from the arguments and the environment; raises StartError."""
    character_id = (argv[0] if argv else environ.get("XIYOU_CHARACTER", "")).strip().lower() or DEFAULT_CHARACTER
    known = sorted(p.parent.name for p in (REPO_ROOT / "apps").glob("*/app.py"))
    if character_id not in known:
        raise StartError(f"unknown character {character_id!r}; use one of: {', '.join(known)}")
    address = environ.get("XIYOU_OPENXLAB_ADDRESS", "").strip() or "0.0.0.0"
    raw_port = environ.get("XIYOU_OPENXLAB_PORT", "").strip() or str(DEFAULT_PORT)
    try:
        port = int(raw_port)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise StartError(
            f"XIYOU_OPENXLAB_PORT={raw_port!r} is not a port number (1-65535); set one, or unset it for {DEFAULT_PORT}"
        )
    return character_id, address, port


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        character_id, address, port = settings(argv, dict(os.environ))
    except StartError as e:
        print(f"openxlab/start.py: {e}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = Process.start(command(character_id, address, port), env=env, cwd=REPO_ROOT)
    forward_signals(proc)
    return proc.popen.wait()


if __name__ == "__main__":
    sys.exit(main())
