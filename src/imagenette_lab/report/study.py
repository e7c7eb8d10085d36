"""The study's published numbers (Table 1, Table 2, Figures 8 and 10), and ours set beside them.

Source: the Keras study this project reproduces (COP528 report, "Deep Learning for Image
Classification"). Class keys are Imagenette WordNet ids so they match our run files whatever names
those use.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pandas as pd

from imagenette_lab.data.classes import IMAGENETTE, IMAGENETTE_BY_WNID
from imagenette_lab.report.display import is_number

if TYPE_CHECKING:
    from imagenette_lab.report.display import Run

# Table 2: validation-split results. Macro-averaged precision / recall / F1.
STUDY_RESULTS: dict[str, dict] = {
    "exp1": {
        "title": "Exp 1: ResNet50, ImageNet-pretrained, no training",
        "short": "ResNet50 pretrained (zero-shot)",
        "accuracy": 0.827,
        "macro_precision": 0.0359,
        "macro_recall": 0.0296,
        "macro_f1": 0.0323,
    },
    "exp2": {
        "title": "Exp 2: EfficientNet-B0 trained from scratch",
        "short": "EfficientNet-B0 from scratch",
        "accuracy": 0.73,
        "macro_precision": 0.75,
        "macro_recall": 0.73,
        "macro_f1": 0.73,
    },
    "exp3": {
        "title": "Exp 3: EfficientNet-B0, ImageNet-pretrained, fine-tuned",
        "short": "EfficientNet-B0 fine-tuned",
        "accuracy": 0.91,
        "macro_precision": 0.91,
        "macro_recall": 0.91,
        "macro_f1": 0.91,
    },
}
EXPERIMENTS = tuple(STUDY_RESULTS)

# The study's settings, so a section can say how ours differ (all scored on the full val, 3,925 images).
STUDY_SETTINGS: dict[str, dict[str, Any]] = {
    "exp1": {"model": "ResNet50", "img_size": 224},
    "exp2": {"model": "EfficientNet-B0", "img_size": 224, "epochs": 40},
    "exp3": {"model": "EfficientNet-B0", "img_size": 224},
}

# Table 1: images per class (train, val) in imagenette2.
STUDY_CLASS_COUNTS: dict[str, tuple[int, int]] = {
    "n01440764": (963, 387),
    "n02102040": (955, 395),
    "n02979186": (993, 357),
    "n03000684": (858, 386),
    "n03028079": (941, 409),
    "n03394916": (956, 394),
    "n03417042": (961, 389),
    "n03425413": (931, 419),
    "n03445777": (951, 399),
    "n03888257": (960, 390),
}

# Figures 8 (Exp 2) and 10 (Exp 3): per-class (precision, recall, f1) on the validation split.
_WNIDS = [c.wnid for c in IMAGENETTE]
STUDY_PER_CLASS: dict[str, dict[str, tuple[float, float, float]]] = {
    "exp2": dict(zip(_WNIDS, [
        (0.81, 0.82, 0.81), (0.70, 0.89, 0.78), (0.65, 0.73, 0.69), (0.55, 0.60, 0.58),
        (0.82, 0.76, 0.79), (0.69, 0.86, 0.77), (0.70, 0.83, 0.76), (0.87, 0.45, 0.59),
        (0.82, 0.65, 0.73), (0.84, 0.76, 0.80),
    ])),
    "exp3": dict(zip(_WNIDS, [
        (0.96, 0.95, 0.95), (0.96, 0.97, 0.97), (0.86, 0.94, 0.90), (0.91, 0.76, 0.83),
        (0.93, 0.95, 0.94), (0.83, 0.93, 0.88), (0.84, 0.94, 0.89), (0.95, 0.79, 0.87),
        (0.94, 0.95, 0.94), (0.93, 0.92, 0.92),
    ])),
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", str(name).lower()).strip()


_BY_NAME = {_norm(c.name): c.wnid for c in IMAGENETTE}


def class_wnid(name: str) -> str | None:
    """The Imagenette wnid for a class label as our files may spell it (wnid, 'chain saw', 'chain_saw')."""
    if name in IMAGENETTE_BY_WNID:
        return name
    return _BY_NAME.get(_norm(name))


def exp1_accuracy_bound() -> float:
    """Highest accuracy consistent with the study's Exp 1 macro recall on its own val class shares.

    accuracy = sum_c recall_c * share_c <= max_share * C * macro_recall.
    """
    val = [v for _, v in STUDY_CLASS_COUNTS.values()]
    max_share = max(val) / sum(val)
    return max_share * len(val) * STUDY_RESULTS["exp1"]["macro_recall"]


def exp1_note() -> str:
    s = STUDY_RESULTS["exp1"]
    return (
        f"The study reports Exp 1 accuracy {s['accuracy']:.3f} with macro precision / recall / F1 "
        f"{s['macro_precision']:.4f} / {s['macro_recall']:.4f} / {s['macro_f1']:.4f}. These cannot "
        "all be true: accuracy is the class-share-weighted mean of per-class recall, so with its "
        f"near-balanced classes a macro recall of {s['macro_recall']:.4f} allows an accuracy of at "
        f"most {exp1_accuracy_bound():.3f}. The per-class scores were computed against mismatched "
        "labels (ImageNet indices vs 0-9 class ids), a label-mapping bug. Our numbers score every "
        "prediction in the evaluated class space; the 1000-way setting (argmax over all ImageNet "
        "classes, an answer outside the 10 classes is an error) is the closest match to the study's "
        "accuracy."
    )


# ----------------------------------------------------------------------------- comparison

METRIC_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1")


def with_study_counts(df: pd.DataFrame) -> pd.DataFrame:
    """class_counts.csv plus the study's Table 1 columns, when its rows are Imagenette wnids."""
    if "wnid" not in df.columns:
        return df
    wnids = [str(w) for w in df["wnid"]]
    if not any(w in STUDY_CLASS_COUNTS for w in wnids):
        return df
    totals = tuple(map(sum, zip(*STUDY_CLASS_COUNTS.values())))
    study = [STUDY_CLASS_COUNTS.get(w, totals if w.lower() == "total" else None) for w in wnids]
    df = df.copy()
    df["study train"] = pd.array([s[0] if s else None for s in study], dtype="Int64")
    df["study val"] = pd.array([s[1] if s else None for s in study], dtype="Int64")
    return df


def add_study_f1(df: pd.DataFrame, experiment: str | None) -> None:
    """Add the study's per-class F1 for `experiment` (and our gap to it) to a per-class report."""
    study = STUDY_PER_CLASS.get(experiment or "")
    if study and "class" in df.columns:
        wnids = [class_wnid(str(c)) for c in df["class"]]
        if any(w in study for w in wnids):
            df["study F1"] = [study[w][2] if w in study else float("nan") for w in wnids]
            if "f1-score" in df.columns:
                df["Δ F1"] = pd.to_numeric(df["f1-score"], errors="coerce") - df["study F1"]


def _variant_label(run: Run | None, variant: str) -> str:
    if variant == "imagenet1000":
        return "1000-way"
    if variant == "restricted":
        n = run.record.dataset.n_classes if run is not None and run.record is not None else None
        return f"{n or 10}-way"
    return ""


def _row(experiment: str | None, run: Run | None, variant: str, metrics: dict[str, Any],
         study: dict[str, Any]) -> dict[str, Any]:
    from imagenette_lab.report.describe import fmt_ci, fmt_interval, metric_ci, short_settings

    ours = {k: float(metrics[k]) if is_number(metrics.get(k)) else None for k in METRIC_KEYS}
    return {
        "experiment": experiment,
        "title": study.get("short", ""),
        "run": run.label if run else None,
        "our_title": run.title if run else None,
        "anchor": run.anchor if run else None,
        "model": run.model if run else None,
        "settings": short_settings(run.settings) if run else [],
        "variant": variant,
        "variant_label": _variant_label(run, variant),
        "ours": ours,
        "ours_text": {k: fmt_ci(ours[k], metric_ci(metrics, k)) for k in METRIC_KEYS},
        "ci": {k: fmt_interval(metric_ci(metrics, k)) for k in METRIC_KEYS},
        "study": {k: study.get(k) for k in METRIC_KEYS},
        "delta": {k: ours[k] - study[k] if ours[k] is not None and study.get(k) is not None else None
                  for k in METRIC_KEYS},
        "significance": "",
    }


def comparison_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (experiment, our run/variant) for runs the study can be set beside: runs on
    Imagenette with a recorded role. An experiment with no such run still gets the study's row."""
    rows: list[dict[str, Any]] = []
    for exp, study in STUDY_RESULTS.items():
        entries: list[tuple[Run | None, str, dict]] = []
        for r in runs:
            if r.experiment != exp or not r.comparable or r.kind not in ("zero_shot", "train", "evaluate"):
                continue
            if r.kind == "zero_shot":  # the 10-way and 1000-way settings are compared separately
                entries += [(r, v.key, v.metrics) for v in r.variants]
            else:
                entries.append((r, "", r.primary_metrics()))
        for r, variant, m in entries or [(None, "", {})]:
            rows.append(_row(exp, r, variant, m, study))
    return rows


def other_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """Runs with results that are not set beside the study (another dataset, or no role)."""
    rows = []
    for r in runs:
        if r.comparable or r.kind in ("analysis", "audit", "seeds", "other"):
            continue
        for v in r.variants or []:
            row = _row(r.experiment, r, v.key if r.kind == "zero_shot" else "", v.metrics, {})
            if any(x is not None for x in row["ours"].values()):
                rows.append(row)
    return rows
