"""Find run directories and read what each holds into the objects in `display`.

Nothing here trusts a run directory to be complete: every file is optional, an unreadable or
malformed one becomes a note in `Run.problems`, an absent expected one an entry in `Run.missing`.
A directory is a *stage* (analysis, zero-shot, train, or a bare evaluation bundle) when its
`run.json` names the kind or its files give it away; otherwise its sub-directories are searched,
one level down, so a `reproduce` output folder can be passed as a whole.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from imagenette_lab.errors import UserError
from imagenette_lab.report.display import (
    MAX_TABLE_ROWS,
    Run,
    Skipped,
    Table,
    Variant,
    draw_curves,
    embed_image,
    flatten,
    fmt_bytes,
    fmt_number,
    fmt_seconds,
    folder_pictures,
    frame_table,
    is_number,
    read_csv,
    read_json,
)
from imagenette_lab.report.study import add_study_f1, with_study_counts

KINDS = ("analysis", "zero_shot", "train")

# Files that give a directory's stage away when its run.json does not say (or is absent).
ANALYSIS_MARKERS = (
    "class_counts.csv", "class_counts.md", "class_counts.png", "class_percentages.png",
    "filesize_stats.csv", "filesize_box.png", "image_stats.csv",
)
TRAIN_MARKERS = ("history.csv", "curves.png", "checkpoints", "eval", "config.yaml")
ZERO_SHOT_MARKERS = ("restricted", "imagenet1000")
EVAL_MARKERS = ("metrics.json", "classification_report.csv")

# Files a finished stage writes; any that are absent are listed as missing in the report.
ANALYSIS_EXPECTED = (
    "class_counts.csv", "class_counts.png", "class_percentages.png",
    "filesize_stats.csv", "filesize_box.png", "summary.json",
)
VARIANT_EXPECTED = (
    "metrics.json", "classification_report.csv", "confusion_matrix.png",
    "confusion_matrix_normalized.png", "top_losses.png", "most_confused.csv",
)
TRAIN_EXPECTED = (
    "config.yaml", "history.csv", "curves.png", "checkpoints/best.pt", "checkpoints/last.pt",
)

ZERO_SHOT_VARIANTS = {
    "restricted": "10-way: argmax over the dataset's classes only",
    "imagenet1000": "1000-way: argmax over all ImageNet classes (an answer outside the dataset's classes is an error)",
}
HEADLINE = (
    ("accuracy", "Accuracy"),
    ("top5_accuracy", "Top-5 accuracy"),
    ("macro_precision", "Macro precision"),
    ("macro_recall", "Macro recall"),
    ("macro_f1", "Macro F1"),
    ("weighted_precision", "Weighted precision"),
    ("weighted_recall", "Weighted recall"),
    ("weighted_f1", "Weighted F1"),
    ("mean_loss", "Mean loss"),
    ("other_predictions", "Predictions outside the classes"),
    ("n", "Images evaluated"),
)
COUNT_KEYS = ("n", "other_predictions")  # headline values shown as whole numbers


# ----------------------------------------------------------------------------- discovery


def _has(d: Path, names: tuple[str, ...]) -> bool:
    return any((d / n).exists() for n in names)


def _children(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _peek_json(path: Path) -> Any:
    """JSON read only to classify a directory: a bad file is left for the loaders to report."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def stage_kind(d: Path) -> str | None:
    """The stage a directory holds, from run.json or its files; None when nothing is recognisable."""
    meta = _peek_json(d / "run.json")
    if isinstance(meta, dict) and meta.get("kind") in KINDS:
        return meta["kind"]
    if any((d / v).is_dir() for v in ZERO_SHOT_MARKERS):
        return "zero_shot"
    metrics = _peek_json(d / "metrics.json")
    if isinstance(metrics, dict) and any(k in metrics for k in ZERO_SHOT_MARKERS):
        return "zero_shot"
    if _has(d, ANALYSIS_MARKERS):
        return "analysis"
    if _has(d, TRAIN_MARKERS):
        return "train"
    if _has(d, EVAL_MARKERS):
        return "evaluation"
    if (d / "run.json").is_file():
        return "other"
    return None


def discover(paths: list[str | Path]) -> tuple[list[tuple[Path, str, str]], list[Skipped], dict | None]:
    """Expand the user's paths into stage directories.

    Returns ([(dir, label, kind)], missing, container_meta). A path that does not exist is a
    UserError; one with no recognisable content is reported as missing, not fatal.
    """
    found: list[tuple[Path, str, str]] = []
    missing: list[Skipped] = []
    container_meta: dict | None = None
    seen: set[Path] = set()

    def add(d: Path, label: str, kind: str) -> None:
        # The same stage may be passed twice (itself and its parent): report it once.
        if d.resolve() not in seen:
            seen.add(d.resolve())
            found.append((d, label, kind))

    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise UserError(f"run directory {p} does not exist")
        if p.is_file() and p.name == "run.json":
            p = p.parent
        if not p.is_dir():
            raise UserError(f"{p} is not a directory (pass run directories or a folder holding them)")
        kind = stage_kind(p)
        if kind is not None and kind != "other":
            add(p, p.resolve().name, kind)
            continue
        stages = [(c, k) for c in _children(p) if (k := stage_kind(c)) is not None]
        if stages:
            if kind == "other":  # e.g. reproduce's own run.json, shown once at the end of the report
                container_meta = _peek_json(p / "run.json")
            for c, k in stages:
                add(c, f"{p.resolve().name}/{c.name}", k)
        elif kind == "other":  # a run.json of some other kind and nothing below it: show what is there
            add(p, p.resolve().name, kind)
        else:
            missing.append(Skipped(str(p), "no run files (run.json, metrics, analysis tables...) here or one level down"))
    return found, missing, container_meta


# ----------------------------------------------------------------------------- loaders


def _note_missing(run: Run, folder: Path, names: tuple[str, ...], prefix: str = "") -> None:
    for n in names:
        if not (folder / n).exists():
            run.missing.append(f"{prefix}{n}")


def _class_column(df: pd.DataFrame) -> pd.DataFrame:
    """A CSV written with its index has an unnamed first column: that index is the class."""
    first = df.columns[0]
    return df.rename(columns={first: "class"}) if first.startswith("Unnamed") else df


def _report_table(df: pd.DataFrame, experiment: str | None) -> Table:
    df = _class_column(df.copy())
    add_study_f1(df, experiment)
    cap = "Per-class precision, recall, F1 (sklearn classification report)"
    if "study F1" in df.columns:
        cap += "; study F1 from its per-class figure"
    return frame_table(df, cap, max_rows=1100)


def load_variant(run: Run, folder: Path, key: str, title: str, fallback: dict | None = None,
                 prefix: str = "") -> Variant:
    v = Variant(key, title)
    m = read_json(run, folder / "metrics.json")
    if not isinstance(m, dict):
        m = fallback if isinstance(fallback, dict) else {}
    v.metrics = m
    v.headline = [(label, fmt_number(int(m[key])) if key in COUNT_KEYS else f"{float(m[key]):.4f}")
                  for key, label in HEADLINE if is_number(m.get(key))]
    df = read_csv(run, folder / "classification_report.csv")
    if df is not None and len(df.columns):
        v.report = _report_table(df, run.experiment)
    elif isinstance(m.get("per_class"), dict) and m["per_class"]:
        rows = [{"class": k, **(val if isinstance(val, dict) else {})} for k, val in m["per_class"].items()]
        v.report = _report_table(pd.DataFrame(rows), run.experiment)
    mc = read_csv(run, folder / "most_confused.csv")
    if mc is not None and len(mc):
        v.confused = frame_table(mc, "Most confused pairs (true -> predicted)", max_rows=15)
    v.pictures = folder_pictures(run, folder, ("confusion_matrix.png", "confusion_matrix_normalized.png",
                                               "top_losses.png"))
    if folder.is_dir():
        _note_missing(run, folder, VARIANT_EXPECTED, prefix)
    else:
        run.missing.append(f"{prefix.rstrip('/') or folder.name}/ (whole folder)")
    return v


def _load_meta(run: Run) -> None:
    meta = read_json(run, run.path / "run.json")
    if meta is None:
        if not (run.path / "run.json").exists():
            run.missing.append("run.json (stage did not finish?)")
        return
    if not isinstance(meta, dict):
        run.problems.append("run.json: not a JSON object")
        return
    run.meta = meta
    status = meta.get("status")
    if status != "complete":
        run.problems.append(f"run.json status is {status!r}, not 'complete'")
    rows: list[tuple[str, str]] = []
    for k in ("name", "kind", "status", "started", "finished"):
        if meta.get(k) is not None:
            rows.append((k, str(meta[k])))
    if meta.get("wall_time_s") is not None:
        rows.append(("wall time", fmt_seconds(meta["wall_time_s"])))
    for section in ("versions", "hardware"):
        if isinstance(meta.get(section), dict):
            rows += [(f"{section}.{k}", fmt_number(v)) for k, v in flatten(meta[section])]
    run.meta_rows = rows
    shown = {"name", "kind", "status", "started", "finished", "wall_time_s", "versions", "hardware"}
    extra = {k: v for k, v in meta.items() if k not in shown}
    if extra:
        run.extra_json = json.dumps(extra, indent=2, default=str)


def _load_analysis(run: Run) -> None:
    d = run.path
    df = read_csv(run, d / "class_counts.csv")
    if df is not None and len(df.columns):
        run.tables.append(frame_table(with_study_counts(df),
                                      "Images per class (count and % of split); study = its Table 1",
                                      max_rows=1000))
    for name, caption, max_rows in (("filesize_stats.csv", "File size per class (bytes)", 1000),
                                    ("image_stats.csv", "Image statistics", MAX_TABLE_ROWS)):
        df = read_csv(run, d / name)
        if df is not None and len(df.columns):
            run.tables.append(frame_table(_class_column(df), caption, max_rows=max_rows))
    df = read_csv(run, d / "unreadable.csv")
    if df is not None:
        cap = f"Unreadable files skipped by the analysis: {len(df):,}"
        if len(df):
            run.tables.append(frame_table(df, cap, max_rows=30))
        else:
            run.info.append(("unreadable files", "0"))
    summary = read_json(run, d / "summary.json")
    if isinstance(summary, dict) and summary:
        # Per-class maps (counts...) repeat the tables above: summarised, not listed.
        pairs = flatten(summary, max_items=8)
        run.tables.append(Table(["key", "value"], [[k, fmt_number(v)] for k, v in pairs], [False, False],
                                "Summary (summary.json)"))
    run.pictures = folder_pictures(run, d, ("class_counts.png", "class_percentages.png", "filesize_box.png"))
    _note_missing(run, d, ANALYSIS_EXPECTED)


def _load_zero_shot(run: Run) -> None:
    d = run.path
    top = read_json(run, d / "metrics.json")
    top = top if isinstance(top, dict) else {}
    for key in ("model", "weights"):
        if top.get(key) is not None:
            run.info.append((key, str(top[key])))
    if isinstance(top.get("images_per_s"), (int, float)):
        run.info.append(("throughput", f"{top['images_per_s']:.1f} images/s"))
    run.model = str(top.get("model") or (run.meta or {}).get("model") or "") or None
    # Each variant lives in its own folder; an older layout kept them only inside metrics.json.
    keys = [k for k in ZERO_SHOT_VARIANTS if (d / k).is_dir() or isinstance(top.get(k), dict)]
    keys += [c.name for c in _children(d) if c.name not in keys and _has(c, EVAL_MARKERS)]
    if not keys:
        keys = list(ZERO_SHOT_VARIANTS)
    for k in keys:
        run.variants.append(load_variant(run, d / k, k, ZERO_SHOT_VARIANTS.get(k, k),
                                         fallback=top.get(k), prefix=f"{k}/"))
    _note_missing(run, d, ("metrics.json",))


def _read_config(run: Run) -> None:
    path = run.path / "config.yaml"
    if not path.is_file():
        return
    try:
        run.config_text = path.read_text()
        cfg = yaml.safe_load(run.config_text)
    except (OSError, UnicodeDecodeError) as e:
        run.problems.append(f"config.yaml: unreadable ({e})")
        return
    except yaml.YAMLError as e:
        run.problems.append(f"config.yaml: invalid YAML ({str(e).splitlines()[0]})")
        return
    if isinstance(cfg, dict):
        run.config = cfg
    else:
        run.problems.append("config.yaml: not a YAML mapping")


def _load_train(run: Run) -> None:
    d = run.path
    meta = run.meta or {}
    model_cfg = (run.config or {}).get("model")
    if not isinstance(model_cfg, dict):
        model_cfg = {}
    run.model = str(meta.get("model") or model_cfg.get("name") or "") or None
    if run.model:
        run.info.append(("model", run.model))
    if "pretrained" in model_cfg:
        w = model_cfg.get("weights_file") or model_cfg.get("weights") or "default"
        run.info.append(("init", f"ImageNet-pretrained ({w})" if model_cfg["pretrained"] else "random (from scratch)"))
    if "freeze_base" in model_cfg:
        run.info.append(("base", "frozen" if model_cfg["freeze_base"] else "trainable"))
    for key, label in (("epochs_run", "epochs run"), ("best_epoch", "best epoch")):
        if meta.get(key) is not None:
            run.info.append((label, fmt_number(meta[key])))
    if isinstance(meta.get("probe"), dict):
        run.info += [(f"probe {k}", fmt_number(v)) for k, v in flatten(meta["probe"])]
    hist = read_csv(run, d / "history.csv")
    curves = embed_image(run, d / "curves.png")
    if curves is None and hist is not None and len(hist):
        curves = draw_curves(run, hist)
    if curves is not None:
        run.pictures.append(curves)
    if hist is not None and len(hist.columns):
        run.tables.append(frame_table(hist, "Per-epoch history", max_rows=200))
    fallback = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else None
    run.variants.append(load_variant(run, d / "eval", "eval", "Validation evaluation (eval/)",
                                     fallback=fallback, prefix="eval/"))
    ckpts = d / "checkpoints"
    if ckpts.is_dir():
        for p in sorted(ckpts.glob("*.pt")):
            try:
                run.info.append((f"checkpoint {p.name}", fmt_bytes(p.stat().st_size)))
            except OSError:
                pass
    _note_missing(run, d, TRAIN_EXPECTED)


def train_experiment(run: Run) -> str | None:
    """exp3 if the model started from ImageNet weights, exp2 if from scratch; else guessed by name."""
    meta = run.meta or {}
    for cfg in (run.config, meta.get("config")):  # config.yaml, then the copy in run.json
        model = cfg.get("model") if isinstance(cfg, dict) else None
        if isinstance(model, dict) and isinstance(model.get("pretrained"), bool):
            return "exp3" if model["pretrained"] else "exp2"
    names = f"{run.path.name} {meta.get('name', '')}".lower()
    if re.search(r"exp[_\-\s]?2|scratch", names):
        return "exp2"
    if re.search(r"exp[_\-\s]?3|transfer|fine[_\-\s]?tun", names):
        return "exp3"
    return None


def load_run(path: Path, label: str, kind: str) -> Run:
    run = Run(path=path, label=label, kind=kind)
    _load_meta(run)
    if kind == "zero_shot":
        run.experiment = "exp1"
        _load_zero_shot(run)
    elif kind == "train":
        # The config decides the experiment, and the experiment picks the study's per-class column.
        _read_config(run)
        run.experiment = train_experiment(run)
        _load_train(run)
    elif kind == "analysis":
        _load_analysis(run)
    elif _has(path, EVAL_MARKERS):  # a bare evaluation bundle
        run.variants.append(load_variant(run, path, "evaluation", "Evaluation"))
    else:  # a run.json of a kind we do not know: show its images
        run.pictures = folder_pictures(run, path, ())
    return run
