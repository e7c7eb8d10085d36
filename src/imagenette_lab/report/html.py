"""Render run directories into one self-contained HTML report plus a Markdown summary.

The HTML embeds every image as a base64 data URI and carries its CSS inline: it opens from an
e-mail attachment or a CI artifact with no network and no sibling files. Jinja2 autoescaping is
on, so names and paths from run files cannot inject markup.
"""

from __future__ import annotations

import logging
import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

from imagenette_lab import __version__
from imagenette_lab.errors import UserError
from imagenette_lab.report.collect import discover, load_run
from imagenette_lab.report.display import Run, fmt_number, fmt_seconds
from imagenette_lab.report.study import EXPERIMENTS, STUDY_RESULTS, comparison_rows, exp1_note
from imagenette_lab.utils import atomic_write_text

log = logging.getLogger(__name__)

KIND_ORDER = {"analysis": 0, "zero_shot": 1, "train": 2, "evaluation": 3, "other": 4}
KIND_TITLES = {
    "analysis": "Dataset analysis",
    "zero_shot": "Zero-shot evaluation",
    "train": "Training run",
    "evaluation": "Evaluation",
    "other": "Run",
}
VARIANT_LABELS = {"restricted": "10-way", "imagenet1000": "1000-way"}


def _order(run: Run, position: int) -> tuple:
    exp = EXPERIMENTS.index(run.experiment) if run.experiment in EXPERIMENTS else len(EXPERIMENTS)
    return (0 if run.kind == "analysis" else 1, exp, KIND_ORDER.get(run.kind or "other", 9), position)


def _section_title(run: Run) -> str:
    if run.experiment:
        return f"{STUDY_RESULTS[run.experiment]['title']} ({run.label})"
    return f"{KIND_TITLES.get(run.kind or 'other', 'Run')}: {run.label}"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("imagenette_lab.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "html.j2", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = fmt_number
    env.filters["metric"] = _metric
    env.filters["delta"] = _delta
    env.filters["seconds"] = fmt_seconds
    return env


def _metric(v: Any, digits: int = 3) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _delta(v: Any, digits: int = 3) -> str:
    return "" if v is None else f"{v:+.{digits}f}"


def _check_out(out_html: Path) -> Path:
    out_html = out_html.expanduser()
    if out_html.is_dir():
        raise UserError(f"--out {out_html} is a directory; give a file name such as {out_html / 'report.html'}")
    try:
        out_html.parent.mkdir(parents=True, exist_ok=True)
        probe = out_html.parent / f".{out_html.name}.write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write the report to {out_html}: {e.strerror or e}") from None
    return out_html


def markdown_path(out_html: Path) -> Path:
    md = out_html.with_suffix(".md")
    return md if md != out_html else out_html.with_name(out_html.name + ".md")


def collect(run_dirs: list[str | Path]) -> tuple[list[Run], list[Any], dict | None]:
    found, missing, container_meta = discover(run_dirs)
    runs = [load_run(path, label, kind) for path, label, kind in found]
    runs = [r for _, r in sorted(enumerate(runs), key=lambda t: _order(t[1], t[0]))]
    used: set[str] = set()
    for r in runs:
        # Anchors safe in a URL fragment, unique even when two runs share a label.
        base = re.sub(r"[^a-z0-9]+", "-", f"{r.experiment or r.kind}-{r.label}".lower()).strip("-") or "run"
        anchor, i = base, 2
        while anchor in used:
            anchor, i = f"{base}-{i}", i + 1
        used.add(anchor)
        r.anchor = anchor
    return runs, missing, container_meta


def _markdown(runs: list[Run], rows: list[dict], missing: list[Any], html_name: str, generated: str) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = [
        "# imagenette-lab report",
        "",
        f"Generated {generated} by imagenette-lab {__version__} from {len(runs)} run director"
        f"{'y' if len(runs) == 1 else 'ies'}. Full report with plots: `{html_name}`.",
        "",
        "## Our results vs the study",
        "",
        "| Experiment | Our run | Accuracy | Study | Δ acc | Macro P | Macro R | Macro F1 | Study P / R / F1 | Δ F1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        exp = f"{row['experiment'].replace('exp', 'Exp ')}: {row['title']}" if row["experiment"] else row["title"]
        if row["run"]:
            run = row["run"] + (f" ({VARIANT_LABELS.get(row['variant'], row['variant'])})" if row["variant"] else "")
            run += f", {row['model']}" if row["model"] else ""  # ours, which may differ from the study's
        else:
            run = "not run"
        o, s, d = row["ours"], row["study"], row["delta"]
        study_prf = (" / ".join(_metric(s[k], 4 if row["experiment"] == "exp1" else 2)
                                for k in ("macro_precision", "macro_recall", "macro_f1"))
                     if s["accuracy"] is not None else "")
        lines.append("| " + " | ".join(cell(x) for x in (
            exp, run, _metric(o["accuracy"]), _metric(s["accuracy"]), _delta(d["accuracy"]),
            _metric(o["macro_precision"]), _metric(o["macro_recall"]), _metric(o["macro_f1"]),
            study_prf, _delta(d["macro_f1"]) if row["experiment"] != "exp1" else "n/a",
        )) + " |")
    lines += ["", f"> **Exp 1 note.** {exp1_note()}", ""]
    lines += ["## Runs", ""]
    for r in runs:
        status = "complete" if r.complete else "INCOMPLETE"
        bits = [f"{KIND_TITLES.get(r.kind or 'other', 'run').lower()}", status]
        if r.model:
            bits.append(r.model)
        if r.meta and r.meta.get("wall_time_s") is not None:
            bits.append(f"wall time {fmt_seconds(r.meta['wall_time_s'])}")
        lines.append(f"- **{cell(r.label)}** ({', '.join(cell(b) for b in bits)})")
        for v in r.variants:
            if v.headline:
                shown = [f"{k.lower()} {val}" for k, val in v.headline
                         if k in ("Accuracy", "Macro F1", "Top-5 accuracy", "Images evaluated")]
                lines.append(f"  - {cell(VARIANT_LABELS.get(v.key, v.key))}: {', '.join(shown)}")
        for k, val in r.info:
            if k in ("best epoch", "epochs run") or k.startswith("probe"):
                lines.append(f"  - {cell(k)}: {cell(val)}")
        if r.missing:
            lines.append(f"  - missing: {cell(', '.join(r.missing))}")
        for p in r.problems:
            lines.append(f"  - problem: {cell(p)}")
    if missing:
        lines += ["", "## Missing", ""]
        lines += [f"- `{cell(m.path)}`: {cell(m.reason)}" for m in missing]
    return "\n".join(lines) + "\n"


def build_report(run_dirs: list[str | Path], out_html: str | Path) -> dict[str, Any]:
    """Write `out_html` (self-contained) and a Markdown summary next to it; return a summary dict.

    `run_dirs` are stage directories (analysis, zero-shot, train) or folders holding them, in any
    order. Paths that do not exist and an unwritable output raise UserError; incomplete or empty
    run directories are reported inside the report.
    """
    if not run_dirs:
        raise UserError("give at least one run directory")
    out_html = _check_out(Path(out_html))
    runs, missing, container_meta = collect(run_dirs)
    rows = comparison_rows(runs)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    n_pictures = sum(len(r.pictures) + sum(len(v.pictures) for v in r.variants) for r in runs)
    context = {
        "title": "imagenette-lab report",
        "generated": generated,
        "version": __version__,
        "host": platform.node(),
        "inputs": [str(p) for p in run_dirs],
        "runs": runs,
        "dataset_runs": [r for r in runs if r.kind == "analysis"],
        "experiment_runs": [r for r in runs if r.kind != "analysis"],
        "section_title": _section_title,
        "rows": rows,
        "missing": missing,
        "container_meta": container_meta,
        "exp1_note": exp1_note(),
        "study": STUDY_RESULTS,
        "variant_labels": VARIANT_LABELS,
        "n_pictures": n_pictures,
        "incomplete": [r for r in runs if r.missing or r.problems or not r.complete],
    }
    html = _env().get_template("report.html.j2").render(**context)
    md_path = markdown_path(out_html)
    md = _markdown(runs, rows, missing, out_html.name, generated)
    try:
        atomic_write_text(out_html, html)
        atomic_write_text(md_path, md)
    except OSError as e:
        raise UserError(f"cannot write the report to {out_html}: {e.strerror or e}") from None
    log.debug("wrote %s (%d runs, %d images, %.1f MB) and %s", out_html, len(runs), n_pictures,
             os.path.getsize(out_html) / 1e6, md_path)
    return {
        "html": str(out_html),
        "markdown": str(md_path),
        "runs": [
            {"path": str(r.path), "label": r.label, "kind": r.kind, "experiment": r.experiment,
             "complete": r.complete, "missing": list(r.missing), "problems": list(r.problems)}
            for r in runs
        ],
        "missing": [{"path": m.path, "reason": m.reason} for m in missing],
        "comparison": rows,
        "images": n_pictures,
    }
