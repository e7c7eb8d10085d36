"""Find run directories and read what each holds into the objects in `display`.

What a run *is* (kind, experiment role, our model, its settings) comes from its `run.json`, read
through `imagenette_lab.runrecord`. A directory without one is an unfinished stage: its files
(history.csv, metrics.json ...) still show what kind it was meant to be, so what it holds is shown
with a list of what is missing, but it claims no role. Nothing here trusts a run directory to be
complete: an unreadable file becomes a note in `Run.problems`, an absent expected one an entry in
`Run.missing`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imagenette_lab import runrecord as rr
from imagenette_lab.errors import UserError
from imagenette_lab.report import describe as D
from imagenette_lab.report.display import (
    Run,
    Skipped,
    Variant,
    folder_pictures,
    fmt_number,
    fmt_seconds,
    flatten,
    frame_table,
    is_number,
    read_csv,
    read_json,
)
from imagenette_lab.report.study import add_study_f1

KINDS = ("analysis", "zero_shot", "train", "evaluate", "audit", "seeds")

# Files that tell what an unfinished directory (no run.json) was meant to be.
ANALYSIS_MARKERS = ("class_counts.csv", "class_counts.png", "filesize_stats.csv", "image_stats.csv")
TRAIN_MARKERS = (rr.HISTORY_CSV, rr.CURVES, rr.CHECKPOINTS, rr.EVAL, rr.CONFIG)
EVAL_MARKERS = (rr.METRICS_JSON, rr.CLASSIFICATION_REPORT)

# Files a finished run writes; any that are absent are listed as missing in the report.
ANALYSIS_EXPECTED = ("class_counts.csv", "class_counts.png", "class_percentages.png",
                     "filesize_stats.csv", "filesize_box.png", rr.SUMMARY_JSON)
VARIANT_EXPECTED = (rr.METRICS_JSON, rr.CLASSIFICATION_REPORT, "confusion_matrix.png",
                    "confusion_matrix_normalized.png", rr.TOP_LOSSES, rr.MOST_CONFUSED)
TRAIN_EXPECTED = (rr.CONFIG, rr.HISTORY_CSV, rr.CURVES, f"{rr.CHECKPOINTS}/{rr.BEST}",
                  f"{rr.CHECKPOINTS}/{rr.LAST}")

VARIANT_TITLES = {
    rr.RESTRICTED: "10-way: the most likely of the dataset's classes",
    rr.IMAGENET1000: "1000-way: the most likely of all ImageNet classes (one outside the dataset's is an error)",
    rr.EVAL: "Evaluation of the reported checkpoint",
}
HEADLINE = (
    ("accuracy", "Accuracy"), ("macro_f1", "Macro F1"), ("macro_precision", "Macro precision"),
    ("macro_recall", "Macro recall"), ("top5_accuracy", "Top-5 accuracy"), ("mean_loss", "Mean loss"),
    ("other_predictions", "Answers outside the classes"), ("n", "Images evaluated"),
)
COUNT_KEYS = ("n", "other_predictions")


# ----------------------------------------------------------------------------- discovery


def _has(d: Path, names: tuple[str, ...]) -> bool:
    return any((d / n).exists() for n in names)


def _children(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _peek_kind(d: Path) -> str | None:
    try:
        meta = json.loads((d / rr.RUN_JSON).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return meta.get("kind") if isinstance(meta, dict) and isinstance(meta.get("kind"), str) else None


def stage_kind(d: Path) -> str | None:
    """The kind a directory holds: run.json's, else (unfinished) what its files show; None: nothing."""
    kind = _peek_kind(d)
    if kind in KINDS:
        return kind
    if kind is None and any((d / v).is_dir() for v in rr.ZERO_SHOT_VARIANTS):
        return "zero_shot"
    if kind is None and _has(d, ANALYSIS_MARKERS):
        return "analysis"
    if kind is None and _has(d, TRAIN_MARKERS):
        return "train"
    if kind is None and _has(d, EVAL_MARKERS):
        return "evaluation"
    if (d / rr.RUN_JSON).is_file():
        return "other"
    return None


def discover(paths: list[str | Path]) -> tuple[list[tuple[Path, str, str]], list[Skipped], dict | None]:
    """Expand the user's paths into run directories: [(dir, label, kind)], missing, container run.json."""
    found: list[tuple[Path, str, str]] = []
    missing: list[Skipped] = []
    container_meta: dict | None = None
    seen: set[Path] = set()

    def add(d: Path, label: str, kind: str) -> None:
        if d.resolve() not in seen:  # the same run passed twice (itself and its parent): once
            seen.add(d.resolve())
            found.append((d, label, kind))

    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise UserError(f"run directory {p} does not exist")
        if p.is_file() and p.name == rr.RUN_JSON:
            p = p.parent
        if not p.is_dir():
            raise UserError(f"{p} is not a directory (pass run directories or a folder holding them)")
        kind = stage_kind(p)
        if kind is not None and kind != "other":
            add(p, p.resolve().name, kind)
            continue
        stages = [(c, k) for c in _children(p) if (k := stage_kind(c)) is not None]
        if stages:
            if kind == "other":  # e.g. a pipeline's own run.json, shown once at the end
                meta = read_json(Run(p, ""), p / rr.RUN_JSON)
                container_meta = meta if isinstance(meta, dict) else None
            for c, k in stages:
                add(c, f"{p.resolve().name}/{c.name}", k)
        elif kind == "other":
            add(p, p.resolve().name, kind)
        else:
            missing.append(Skipped(str(p), "no run files (run.json, metrics, analysis tables...) here or one level down"))
    return found, missing, container_meta


# ----------------------------------------------------------------------------- shared loaders


def note_missing(run: Run, folder: Path, names: tuple[str, ...], prefix: str = "") -> None:
    run.missing += [f"{prefix}{n}" for n in names if not (folder / n).exists()]


def class_column(df):
    """A CSV written with its index has an unnamed first column: that index is the class."""
    first = df.columns[0]
    return df.rename(columns={first: "class"}) if first.startswith("Unnamed") else df


def _report_table(df, metrics: dict[str, Any], role: str | None, comparable: bool):
    import pandas as pd

    df = class_column(df.copy())
    recall_ci = (metrics.get("ci") or {}).get("per_class_recall") if isinstance(metrics.get("ci"), dict) else None
    if isinstance(recall_ci, dict) and "class" in df.columns:
        df["recall CI"] = [D.fmt_interval(recall_ci.get(str(c))) for c in df["class"]]
    if comparable:
        add_study_f1(df, role)
    if "support" in df.columns:
        df["support"] = pd.to_numeric(df["support"], errors="coerce").astype("Int64")
    cap = "Per class: precision, recall, F1"
    if "study F1" in df.columns:
        cap += "; study F1 from its per-class figure"
    return frame_table(df, cap, max_rows=1100)


def load_variant(run: Run, folder: Path, key: str, fallback: dict | None = None, prefix: str = "") -> Variant:
    from imagenette_lab.report.extras import add_eval_extras

    v = Variant(key, VARIANT_TITLES.get(key, key.replace("_", " ").capitalize()))
    m = read_json(run, folder / rr.METRICS_JSON)
    v.metrics = m if isinstance(m, dict) else (fallback if isinstance(fallback, dict) else {})
    for k, label in HEADLINE:
        val = v.metrics.get(k)
        if not is_number(val):
            continue
        text = fmt_number(int(val)) if k in COUNT_KEYS else D.fmt_ci(val, D.metric_ci(v.metrics, k), 3)
        v.headline.append((label, text))
    df = read_csv(run, folder / rr.CLASSIFICATION_REPORT)
    if df is not None and len(df.columns):
        v.report = _report_table(df, v.metrics, run.experiment, run.comparable)
    mc = read_csv(run, folder / rr.MOST_CONFUSED)
    if mc is not None and len(mc):
        if "predicted" in mc.columns:  # metrics.other_name: an answer outside the evaluated classes
            mc["predicted"] = ["a class outside the set" if str(x) in ("other", "(other)") else x
                               for x in mc["predicted"]]
        if "fraction_of_true" in mc.columns:  # a share reads better as a percentage
            mc["fraction_of_true"] = [f"{100 * x:.1f} %" if is_number(x) else "" for x in mc["fraction_of_true"]]
        v.confused = frame_table(mc, "Most confused pairs (true → predicted)", max_rows=10)
    v.pictures = folder_pictures(run, folder, ("confusion_matrix.png", "confusion_matrix_normalized.png",
                                               rr.TOP_LOSSES, rr.TOP_LOSSES_CAM, rr.GRADCAM_GRID,
                                               rr.RELIABILITY_PNG))
    add_eval_extras(run, v, folder)
    if folder.is_dir():
        note_missing(run, folder, VARIANT_EXPECTED, prefix)
    else:
        run.missing.append(f"{prefix.rstrip('/') or folder.name}/ (whole folder)")
    return v


def _load_meta(run: Run) -> None:
    path = run.path / rr.RUN_JSON
    if not path.exists():
        run.missing.append("run.json (stage did not finish?)")
        return
    try:
        rec = rr.read_run(run.path)
    except UserError as e:
        run.problems.append(str(e))
        return
    run.record, run.meta = rec, rec.raw
    if rec.status != "complete":
        run.problems.append(f"run.json status is {rec.status!r}, not 'complete'")
    if rec.legacy:
        run.problems.append("run.json was written before run records had a format version and names no "
                            "experiment role, so it is not set beside the study; rerun this stage to compare it")
    rows: list[tuple[str, str]] = [(k, str(v)) for k, v in (("name", rec.name), ("kind", rec.kind),
                                                             ("status", rec.status), ("started", rec.started),
                                                             ("finished", rec.finished)) if v is not None]
    if rec.wall_time_s is not None:
        rows.append(("wall time", fmt_seconds(rec.wall_time_s)))
    rss = rec.raw.get("peak_rss_mib")
    if isinstance(rss, dict) and is_number(rss.get("process")):
        # Not the workers': a forked worker's RSS counts the pages it shares with this process.
        rows.append(("peak memory (RSS)", f"{rss['process']:,.0f} MiB"))
    hw = {k: (" ".join(v) or "none") if isinstance(v, list) else v for k, v in rec.hardware.items()}
    rows += [(f"versions: {k}", fmt_number(v)) for k, v in flatten(rec.versions)]
    rows += [(f"hardware: {k}", fmt_number(v)) for k, v in flatten(hw)]
    run.meta_rows = rows


def _incomplete_role(run: Run) -> str | None:
    """An unfinished training run has no run.json, but its config.yaml records the role it was given."""
    import yaml

    try:
        cfg = yaml.safe_load((run.path / rr.CONFIG).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    role = cfg.get("role") if isinstance(cfg, dict) else None
    return role if role in rr.ROLES else None


def load_run(path: Path, label: str, kind: str) -> Run:
    from imagenette_lab.report import kinds
    from imagenette_lab.report.summary import summarise

    run = Run(path=path, label=label, kind=kind)
    _load_meta(run)
    rec = run.record
    if rec is not None:
        run.experiment = rec.role
        run.comparable = rec.role is not None and rec.dataset.is_imagenette
        run.model = rec.model.display or rec.model.name
        run.settings = D.settings_items(rec, D.throughput_text(rec))
    elif kind == "train":
        # Unfinished: no numbers to compare, but its row says the experiment was started.
        run.experiment = _incomplete_role(run)
        run.comparable = run.experiment is not None
    run.title = D.title(rec, kind, label, run.experiment)
    loader = {"analysis": kinds.load_analysis, "zero_shot": kinds.load_zero_shot, "train": kinds.load_train,
              "evaluate": kinds.load_evaluate, "audit": kinds.load_audit, "seeds": kinds.load_seeds}.get(kind)
    if loader is not None:
        loader(run)
    elif _has(path, EVAL_MARKERS):  # a bare evaluation bundle
        run.variants.append(load_variant(run, path, "evaluation"))
    else:  # a run.json of a kind we do not know: show its images
        run.pictures = folder_pictures(run, path, ())
    run.summary = summarise(run)
    return run
