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
from imagenette_lab.report.extras import paired_tests
from imagenette_lab.report.summary import comparison_summary
from imagenette_lab.report.study import EXPERIMENTS, STUDY_RESULTS, comparison_rows, exp1_note, other_rows
from imagenette_lab.utils import atomic_write_text

log = logging.getLogger(__name__)

KIND_ORDER = {"analysis": 0, "audit": 1, "zero_shot": 2, "train": 3, "seeds": 4, "evaluate": 5, "evaluation": 5,
              "other": 6}
VARIANT_LABELS = {"restricted": "10-way", "imagenet1000": "1000-way", "eval": ""}


def _order(run: Run, position: int) -> tuple:
    exp = EXPERIMENTS.index(run.experiment) if run.experiment in EXPERIMENTS else len(EXPERIMENTS)
    return (0 if run.kind in ("analysis", "audit") else 1, exp, KIND_ORDER.get(run.kind or "other", 9), position)


def _paired(runs: list[Run], rows: list[dict]) -> tuple[list[dict], list[str]]:
    """McNemar tests between the compared runs' 10-way predictions (Exp 1 restricted, Exp 2, Exp 3)."""
    from imagenette_lab import runrecord as rr

    entries = []
    for row in rows:
        run = next((r for r in runs if r.anchor == row["anchor"]), None)
        if run is None or row["variant"] == rr.IMAGENET1000:
            continue
        folder = run.path / (rr.RESTRICTED if row["variant"] == rr.RESTRICTED else rr.EVAL)
        entries.append((row["experiment"].replace("exp", "Exp "), run, folder))
    tests, notes = paired_tests(entries)
    for row in rows:
        label = (row["experiment"] or "").replace("exp", "Exp ")
        marks = [t["b"] if t["a"] == label else t["a"] for t in tests
                 if t["significant"] and label in (t["a"], t["b"]) and row["variant"] != "imagenet1000"]
        row["significance"] = ", ".join(marks)
    return tests, notes


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
    # The extra seeds of a multi-seed run are summarised in its seeds section, not shown one by one.
    members = {m for r in runs for m in r.seed_members}
    runs = [r for r in runs if str(r.path.resolve()) not in members]
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


def _markdown(runs: list[Run], rows: list[dict], others: list[dict], tests: list[dict], missing: list[Any],
              html_name: str, generated: str) -> str:
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
        "| Experiment (study's model) | Our run | Accuracy | Study | Δ acc | Macro F1 | Study F1 | Δ F1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        exp = f"{row['experiment'].replace('exp', 'Exp ')} (study: {row['title']})"
        run = row["our_title"] or "not run"
        if row["variant_label"]:
            run += f" ({row['variant_label']})"
        o, st, d = row["ours_text"], row["study"], row["delta"]
        exp1 = row["experiment"] == "exp1"
        lines.append("| " + " | ".join(cell(x) for x in (
            exp, run, o["accuracy"], _metric(st["accuracy"]), _delta(d["accuracy"]), o["macro_f1"],
            _metric(st["macro_f1"], 4 if exp1 else 2), "n/a" if exp1 else _delta(d["macro_f1"]),
        )) + " |")
    lines += ["", f"> **Exp 1 note.** {exp1_note()}", ""]
    if tests:
        lines += ["Paired tests (McNemar exact, Holm-corrected across the pairs):", ""]
        lines += [f"- {t['a']} vs {t['b']}: only {t['a']} right {t['a_only']}, only {t['b']} right {t['b_only']}, "
                  f"p = {t['p']:.3g}, Holm p = {t['p_holm']:.3g}{' (significant at 0.05)' if t['significant'] else ''}"
                  for t in tests]
        lines.append("")
    if others:
        lines += ["## Other runs (not compared with the study)", ""]
        lines += [f"- {cell(r['our_title'])}{cell(' (' + r['variant_label'] + ')' if r['variant_label'] else '')}: accuracy {r['ours_text']['accuracy']}, macro F1 {r['ours_text']['macro_f1']}"
                  for r in others]
        lines.append("")
    lines += ["## Runs", ""]
    for r in runs:
        status = "complete" if r.complete else "INCOMPLETE"
        lines.append(f"### {cell(r.title)}" + ("" if r.title.endswith("(unfinished)") else f" ({status})"))
        lines.append("")
        if r.settings:
            lines.append(cell(" · ".join(r.settings)))
            lines.append("")
        for v in r.variants:
            shown = [f"{k.lower()} {val}" for k, val in v.headline if k in ("Accuracy", "Macro F1", "Images evaluated")]
            if shown:
                label = v.title.split(":")[0] if ":" in v.title else ""
                lines.append(f"- {cell(label + ': ' if label else '')}{cell(', '.join(shown))}")
        lines += [f"- {cell(t)}" for t in r.summary]
        if r.missing:
            lines.append(f"- missing: {cell(', '.join(r.missing))}")
        lines += [f"- problem: {cell(p)}" for p in r.problems]
        lines.append(f"- folder: `{cell(r.path)}`")
        lines.append("")
    if missing:
        lines += ["## Missing", ""]
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
    others = other_rows(runs)
    tests, test_notes = _paired(runs, rows)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    n_pictures = sum(len(r.pictures) + sum(len(v.pictures) for v in r.variants) for r in runs)
    context = {
        "title": "imagenette-lab report",
        "generated": generated,
        "version": __version__,
        "host": platform.node(),
        "inputs": [str(p) for p in run_dirs],
        "runs": runs,
        "dataset_runs": [r for r in runs if r.kind in ("analysis", "audit")],
        "experiment_runs": [r for r in runs if r.kind not in ("analysis", "audit")],
        "rows": rows,
        "others": others,
        "tests": tests,
        "comparison_summary": comparison_summary(rows, tests),
        "test_notes": test_notes,
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
    md = _markdown(runs, rows, others, tests, missing, out_html.name, generated)
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
             "title": r.title, "comparable": r.comparable, "complete": r.complete, "missing": list(r.missing), "problems": list(r.problems)}
            for r in runs
        ],
        "missing": [{"path": m.path, "reason": m.reason} for m in missing],
        "comparison": rows,
        "other_results": others,
        "paired_tests": tests,
        "images": n_pictures,
    }
