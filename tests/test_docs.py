"""The README and every page under docs/: code blocks parse, and every command they show exists.

A reader copies commands from these pages; a renamed option or module must fail here, not on their machine.
For each command line that runs one of the project's own entry points (`.venv/bin/xiyou …`, `python -m
pipeline.<step>`, `python -m xiyou…`, `streamlit run <page>`), the test runs its `--help` (or checks the page
file exists) with this interpreter.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(((?!https?://|#)[^)#\s]+)(?:#[^)]*)?\)")


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text(encoding="utf-8"))]


def shell_commands(script: str) -> list[list[str]]:
    """Each command of a shell block as words: continuation lines joined, comments and env assignments dropped."""
    script = re.sub(r"\\\n\s*", " ", script)
    commands = []
    for line in script.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
            try:
                words = shlex.split(part)
            except ValueError:
                continue
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                words.pop(0)
            if words and words[0] == "export":
                continue
            if words:
                commands.append(words)
    return commands


def entry_point(words: list[str]) -> tuple[str, ...] | None:
    """The project's entry point a command runs, as the argv of its `--help`; None for anything else."""
    exe = Path(words[0]).name
    if exe == "xiyou":
        sub = [w for w in words[1:3] if not w.startswith("-") and not re.search(r"[^a-z_-]", w)]
        # `xiyou canon search …`: groups take one more word; stop at the first argument that is not a command
        argv = ["-m", "xiyou.cli"]
        for w in sub:
            argv.append(w)
            if _is_group(argv[2:]) is False:
                break
        return (*argv, "--help")
    if exe.startswith("python") and len(words) > 2 and words[1] == "-m":
        module = words[2]
        if module.startswith(("pipeline", "xiyou")):
            return ("-m", module, "--help")
    if exe.startswith("python") and len(words) > 1 and words[1].startswith("benchmarks/"):
        return (words[1], "--help")
    return None


def _is_group(path: list[str]) -> bool:
    from click import Group

    from xiyou.cli import main

    cmd = main
    for name in path:
        if not isinstance(cmd, Group) or name not in cmd.commands:
            return False
        cmd = cmd.commands[name]
    return isinstance(cmd, Group)


def all_blocks(lang: tuple[str, ...]) -> list[tuple[str, int, str]]:
    return [(p.relative_to(ROOT).as_posix(), i, code) for p in PAGES for i, (kind, code) in enumerate(blocks(p))
            if kind in lang]


def test_pages_exist_and_readme_is_short() -> None:
    assert (ROOT / "docs").is_dir()
    assert len(PAGES) >= 6
    size = len((ROOT / "README.md").read_text(encoding="utf-8").encode("utf-8"))
    assert size <= 9000, f"README.md is {size} bytes: keep it short and move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = [t for t in LINK.findall(text) if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"
    # and a link to a heading names one that is there, as GitHub spells its anchor
    broken = []
    for target, anchor in ANCHOR_LINK.findall(text):
        linked = (page.parent / target) if target else page
        if linked.suffix == ".md" and linked.exists() and anchor not in _anchors(linked):
            broken.append(f"{target}#{anchor}")
    assert not broken, f"{page.name} links to headings that are not there: {broken}"


ANCHOR_LINK = re.compile(r"\]\(((?!https?://)[^)#\s]*)#([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation (·, parentheses, backticks) dropped,
    each space a hyphen (`## The endpoints file · 端点文件` → `the-endpoints-file--端点文件`)."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"#{1,6}\s+(.+?)\s*$", line)
        if heading:
            found.add(re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-"))
    return found


@pytest.mark.parametrize("where,index,code", all_blocks(("toml",)), ids=lambda v: str(v)[:30])
def test_toml_blocks_parse(where: str, index: int, code: str) -> None:
    tomllib.loads(code)


def test_python_blocks_parse() -> None:
    for where, index, code in all_blocks(("python", "py")):
        try:
            ast.parse(code)
        except SyntaxError as e:
            pytest.fail(f"{where} block {index}: {e}")


@pytest.mark.parametrize("where,index,code", all_blocks(("bash", "sh", "shell")), ids=lambda v: str(v)[:30])
def test_shell_blocks_parse(where: str, index: int, code: str) -> None:
    proc = subprocess.run(["bash", "-n"], input=code, text=True, capture_output=True)
    assert proc.returncode == 0, f"{where} block {index}: {proc.stderr}"


def _documented_entry_points() -> dict[tuple[str, ...], str]:
    found: dict[tuple[str, ...], str] = {}
    for where, _, code in all_blocks(("bash", "sh", "shell")):
        for words in shell_commands(code):
            if Path(words[0]).name == "streamlit" and len(words) > 2 and words[1] == "run":
                found.setdefault(("page", words[2]), where)
                continue
            argv = entry_point(words)
            if argv:
                found.setdefault(argv, where)
    return found


DOCUMENTED = _documented_entry_points()


def test_the_pages_document_the_main_entry_points() -> None:
    modules = {argv[1] for argv in DOCUMENTED if argv[0] == "-m"}
    for expected in ("xiyou.cli", "pipeline.q2a", "pipeline.train", "pipeline.serve", "pipeline.eval"):
        assert expected in modules, f"no page shows how to run {expected}"


@pytest.mark.parametrize("argv", sorted(DOCUMENTED), ids=lambda a: " ".join(a))
def test_documented_command_exists(argv: tuple[str, ...]) -> None:
    where = DOCUMENTED[argv]
    if argv[0] == "page":
        assert (ROOT / argv[1]).is_file(), f"{where}: `streamlit run {argv[1]}`: no such page"
        return
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{where}: `{' '.join(argv)}` failed:\n{proc.stdout[-800:]}\n{proc.stderr[-1500:]}"
    assert "usage" in proc.stdout.lower(), f"{where}: `{' '.join(argv)}` printed no usage"
