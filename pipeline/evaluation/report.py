"""Write an evaluation run: metrics.json (the numbers), report.md (for people), PNG charts; compare two runs."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from pipeline.evaluation.classifier import HeldOut
from pipeline.evaluation.metrics import CharacterMetrics, Metrics
from xiyou.io import write_json_atomic, write_text_atomic

#: The per-character numbers, in report order, with how to read them.
METRICS = {
    "who_said_it": ("who-said-it accuracy", "higher: the reply sounds like this character"),
    "self_ref_rate": ("self-reference rate", "higher: uses 贫僧/俺老孙/老猪/老沙…"),
    "broken_persona_rate": ("broken-persona rate", "lower: fewer “作为一个AI…”"),
    "distinctness": ("distinctness", "higher: sounds unlike the other three"),
    "canon_similarity": ("similarity to nearest canon line", "higher: closer to the novel"),
    "mean_length": ("mean reply length (chars)", ""),
    "median_length": ("median reply length (chars)", ""),
}


def metrics_json(metrics: Metrics, held_out: HeldOut, run: dict[str, Any]) -> dict[str, Any]:
    return {
        "run": run,
        "classifier": dataclasses.asdict(held_out),
        "characters": {cid: dataclasses.asdict(m) for cid, m in metrics.characters.items()},
        "confusion": {"labels": list(metrics.labels), "matrix": [list(r) for r in metrics.confusion]},
        "similarity": {"labels": list(metrics.labels), "matrix": [list(r) for r in metrics.similarity]},
    }


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(value: float | None) -> str:
    """A metric for people: "–" where it is not defined (distinctness of one character alone)."""
    if _missing(value):
        return "–"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def _change(value: float | None) -> str:
    return "–" if _missing(value) else f"{value:+.3f}"


def summary_line(cid: str, m: CharacterMetrics) -> str:
    """One character's numbers on one line (the command's output); "–" where a number is not defined."""

    def two(value: float) -> str:
        return "–" if _missing(value) else f"{value:.2f}"

    return (
        f"{cid:8s} who-said-it {two(m.who_said_it)}  self-ref {two(m.self_ref_rate)}  "
        f"broken {two(m.broken_persona_rate)}  distinct {two(m.distinctness)}  canon-sim {two(m.canon_similarity)}  "
        f"len {m.mean_length:.0f}"
    )


def run_label(path: Path, data: dict[str, Any]) -> str:
    """How a report names an earlier run: its folder, backend and start."""
    where = path.parent if path.name == "metrics.json" else path
    run = data.get("run", {})
    return f"`{where}` (backend {run.get('backend', '?')}, started {run.get('started', '?')})"


def backend_note(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The warning a comparison across backends needs, or None for the same backend."""
    a, b = old.get("run", {}).get("backend"), new.get("run", {}).get("backend")
    if a == b:
        return None
    return (
        f"> The two runs used different backends ({a} before, {b} now). Each backend ends a reply its own way "
        "(local weights stop at the model's end-of-turn token, a server at the stop strings it honours, the canon "
        "backend answers with whole canon lines), so part of a change in length and wording comes from that, "
        "not from the model."
    )


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, float, float, float]]:
    """(character, metric, old, new, change) for every metric both runs have."""
    rows = []
    for cid, now in new["characters"].items():
        before = old.get("characters", {}).get(cid)
        if not before:
            continue
        for key in METRICS:
            if key in before and key in now:
                rows.append((cid, key, before[key], now[key], now[key] - before[key]))
    return rows


def render_markdown(
    data: dict[str, Any], comparison: list | None = None, old_name: str = "", note: str | None = None
) -> str:
    run, clf = data["run"], data["classifier"]
    ids = list(data["characters"])
    lines = [
        "# Character evaluation · 角色评测",
        "",
        f"- backend: `{run['backend']}`; characters: {', '.join(ids)}; questions: {run['questions']}; "
        f"samples per question: {run['samples']}; replies: {run['replies']} ({run['errors']} failed)",
        f"- who-said-it classifier: held-out accuracy **{clf['accuracy']:.3f}** (balanced "
        f"{clf['balanced_accuracy']:.3f}) on {clf['n_test']} canon lines from unseen chapters "
        f"(trained on {clf['n_train']})",
        f"- run: {run['started']} → {run['finished']}",
        "",
        "## Per character",
        "",
        "| metric | " + " | ".join(ids) + " | read as |",
        "| --- | " + " | ".join("---:" for _ in ids) + " | --- |",
    ]
    for key, (label, hint) in METRICS.items():
        values = [_fmt(data["characters"][cid][key]) for cid in ids]
        lines.append(f"| {label} | " + " | ".join(values) + f" | {hint} |")
    labels = data["confusion"]["labels"]
    lines += [
        "",
        "## Who the classifier heard (rows: the character asked; columns: predicted)",
        "",
        "| asked \\ heard | " + " | ".join(labels) + " |",
        "| --- | " + " | ".join("---:" for _ in labels) + " |",
    ]
    for label, row in zip(labels, data["confusion"]["matrix"]):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "![confusion](confusion.png)", "", "![metrics](metrics.png)", ""]
    lines += _leak_lines(run)
    if comparison:
        lines += [
            f"## Change since {old_name}",
            "",
            *([note, ""] if note else []),
            "| character | metric | before | now | change |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for cid, key, before, now, change in comparison:
            lines.append(f"| {cid} | {METRICS[key][0]} | {_fmt(before)} | {_fmt(now)} | {_change(change)} |")
        lines.append("")
    return "\n".join(lines)


def _leak_lines(run: dict[str, Any]) -> list[str]:
    """The future-knowledge leaks of a run set after chapter N (pipeline/evaluation/leaks.py), per character with the
    mode he answered in; [] for a run over the whole journey."""
    leaks = run.get("leaks")
    if not leaks:
        return []
    modes = run.get("modes", {})
    lines = [
        f"## Future-knowledge leaks (after chapter {run.get('chapter')})",
        "",
        "A reply leaks when it cites a later chapter or names someone or something the novel first mentions later.",
        "",
        "| character | mode | replies | leaking | rate | leaked most |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for cid, row in leaks.items():
        what = "、".join(f"{name} ×{n}" for name, n in row["what"].items()) or "–"
        lines.append(
            f"| {cid} | {modes.get(cid, '?')} | {row['replies']} | {row['leaking']} | {row['rate']:.1%} | {what} |"
        )
    return [*lines, ""]


def draw_charts(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """confusion.png and metrics.png (labels are character ids: no CJK font is needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = data["confusion"]["labels"]
    matrix = data["confusion"]["matrix"]
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=120)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("classifier heard")
    ax.set_ylabel("character asked")
    top = max((max(r) for r in matrix), default=0) or 1
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_title("who said it")
    fig.tight_layout()
    paths = [out_dir / "confusion.png"]
    fig.savefig(paths[0])
    plt.close(fig)

    ids = list(data["characters"])
    rates = ["who_said_it", "self_ref_rate", "broken_persona_rate", "distinctness", "canon_similarity"]
    fig, axes = plt.subplots(1, len(rates), figsize=(3.0 * len(rates), 3.2), dpi=110, sharey=True)
    for ax, key in zip(axes, rates):
        values = [data["characters"][cid][key] for cid in ids]
        ax.bar(ids, [0 if (v is None or math.isnan(v)) else v for v in values], color="#c0392b")
        ax.set_title(key.replace("_", " "))
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    paths.append(out_dir / "metrics.png")
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def write_report(data: dict[str, Any], out_dir: Path, old: Path | None = None) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison, label, note = None, "", None
    if old is not None:
        before = json.loads(old.read_text(encoding="utf-8"))
        comparison, label, note = compare(before, data), run_label(old, before), backend_note(before, data)
    paths = {"json": write_json_atomic(out_dir / "metrics.json", data)}
    charts = draw_charts(data, out_dir)
    markdown = render_markdown(data, comparison, label, note)
    paths["report"] = write_text_atomic(out_dir / "report.md", markdown)
    paths.update({p.stem: p for p in charts})
    return paths
