"""Classification metrics and the on-disk evaluation bundle shared by zero-shot, training and the report.

Labels are always indices into the evaluated class list (0..C-1). A model that can predict outside
that list (a 1000-way ImageNet head scored on 10 classes) must map those predictions to OTHER;
they then count as errors for accuracy and recall but never as false positives of a real class.
Indices in any other space are rejected with ValueError instead of silently producing nonsense
per-class numbers (the study's Exp1 reported accuracy .827 with macro F1 .032 that way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from imagenette_lab.plots import plot_confusion, plot_gallery, row_normalize
from imagenette_lab.utils import atomic_write_json, atomic_write_text

OTHER = -1
OTHER_NAME = "other"
# Clip probabilities before log so a confidently wrong prediction gives a large finite loss.
EPS = 1e-12


def _as_labels(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        # Float labels are accepted only when they are whole numbers (e.g. from a pandas column).
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _validate(
    y_true: Any, y_pred: Any, num_classes: int, probs: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Check shapes and label ranges; return int64 labels and float probabilities (or None)."""
    yt, yp = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if num_classes < 1:
        raise ValueError("need at least one class")
    if len(yt) != len(yp):
        raise ValueError(f"y_true has {len(yt)} labels but y_pred has {len(yp)}")
    if len(yt) == 0:
        raise ValueError("no samples to evaluate")
    bad_true = (yt < 0) | (yt >= num_classes)
    if bad_true.any():
        raise ValueError(
            f"y_true must be in 0..{num_classes - 1}; found {sorted(set(yt[bad_true].tolist()))[:5]}"
        )
    bad_pred = ((yp < 0) | (yp >= num_classes)) & (yp != OTHER)
    if bad_pred.any():
        raise ValueError(
            f"y_pred must be in 0..{num_classes - 1} or OTHER ({OTHER}); found "
            f"{sorted(set(yp[bad_pred].tolist()))[:5]} - are predictions in another index space "
            "(e.g. ImageNet-1k) without mapping to the evaluated classes?"
        )
    p = None
    if probs is not None:
        p = np.asarray(probs, dtype=float)
        if p.shape != (len(yt), num_classes):
            raise ValueError(f"probs must have shape ({len(yt)}, {num_classes}), got {p.shape}")
        # Losses need probabilities; logits here would give meaningless -log p values.
        if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1 + 1e-6:
            raise ValueError("probs must be finite probabilities in [0, 1] (apply softmax to logits)")
    return yt, yp, p


def _check_names(class_names: Sequence[str]) -> list[str]:
    names = [str(n) for n in class_names]
    if len(set(names)) != len(names):
        raise ValueError("class_names must be unique")
    return names


def other_name(class_names: Sequence[str]) -> str:
    """Display name for OTHER predictions; bracketed if a real class is already called "other"."""
    return OTHER_NAME if OTHER_NAME not in class_names else f"({OTHER_NAME})"


def true_class_loss(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy -log p(true class)."""
    p_true = probs[np.arange(len(y_true)), y_true]
    return -np.log(np.clip(p_true, EPS, 1.0))


def compute_metrics(
    y_true: Any, y_pred: Any, class_names: Sequence[str], probs: Any = None
) -> dict[str, Any]:
    """Accuracy, macro/weighted P/R/F1, per-class scores, top-5 (C > 5) and mean loss (with probs), as a JSON-able dict.

    Averages run over all C classes (labels=range(C), zero_division=0), so a class that is never
    predicted scores precision 0 rather than being dropped from the macro average.
    """
    names = _check_names(class_names)
    c = len(names)
    yt, yp, p = _validate(y_true, y_pred, c, probs)
    labels = list(range(c))
    prec, rec, f1, support = precision_recall_fscore_support(
        yt, yp, labels=labels, zero_division=0
    )
    out: dict[str, Any] = {
        "n": int(len(yt)),
        "num_classes": c,
        "accuracy": float(accuracy_score(yt, yp)),
    }
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(
            yt, yp, labels=labels, average=avg, zero_division=0
        )
        out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = float(ap), float(ar), float(af)
    if p is not None:
        # With 5 or fewer classes top-5 is trivially 1.0, so it is left out.
        if c > 5:
            out["top5_accuracy"] = float(top_k_accuracy_score(yt, p, k=5, labels=labels))
        out["mean_loss"] = float(true_class_loss(yt, p).mean())
    out["other_predictions"] = int((yp == OTHER).sum())
    out["per_class"] = {
        name: {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }
    return out


def paired_comparison(y_true: Any, pred_a: Any, pred_b: Any, names: tuple[str, str] = ("a", "b")) -> dict[str, Any]:
    """Two classifiers scored on the same items: accuracies, the 2x2 table, McNemar's exact p
    (one implementation: `stats.paired_table`)."""
    from imagenette_lab.stats import paired_table

    yt = _as_labels(y_true, "y_true")
    a, b = _as_labels(pred_a, names[0]), _as_labels(pred_b, names[1])
    return paired_table(yt, a, b, names=names)


def confusion(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted; a last "other" column only if any OTHER."""
    yt, yp, _ = _validate(y_true, y_pred, num_classes)
    labels = list(range(num_classes))
    has_other = bool((yp == OTHER).any())
    if has_other:
        labels.append(OTHER)
    cm = confusion_matrix(yt, yp, labels=labels)
    # sklearn also adds a row for OTHER as a true label, which is always empty: drop it.
    return cm[:num_classes] if has_other else cm


def column_names(cm: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """Predicted-class names for the columns of `cm`, with "other" for the extra column."""
    names = list(class_names)
    if cm.shape[1] == len(names) + 1:
        return names + [other_name(names)]
    if cm.shape[1] != len(names):
        raise ValueError(f"confusion matrix has {cm.shape[1]} columns for {len(names)} classes")
    return names


def most_confused(cm: np.ndarray, class_names: Sequence[str], k: int = 10) -> list[dict[str, Any]]:
    """The k largest off-diagonal cells: {true, predicted, count, fraction_of_true}, largest first."""
    cm = np.asarray(cm)
    cols = column_names(cm, class_names)
    row_sums = cm.sum(axis=1)
    pairs = [
        (int(cm[i, j]), i, j)
        for i in range(cm.shape[0])
        for j in range(cm.shape[1])
        if i != j and cm[i, j] > 0
    ]
    # Ties broken by class order so the list is reproducible.
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [
        {
            "true": class_names[i],
            "predicted": cols[j],
            "count": count,
            "fraction_of_true": float(count / row_sums[i]),
        }
        for count, i, j in pairs[:k]
    ]


def _report_frame(report: dict[str, Any], accuracy: float, n: int) -> pd.DataFrame:
    """sklearn's output_dict as a table; an explicit accuracy row is always present."""
    rows = {k: v for k, v in report.items() if isinstance(v, dict)}
    df = pd.DataFrame.from_dict(rows, orient="index")
    # sklearn shows "micro avg" instead of "accuracy" when OTHER predictions exist; keep both.
    df.loc["accuracy"] = {"precision": np.nan, "recall": np.nan, "f1-score": accuracy, "support": n}
    df["support"] = df["support"].astype(int)
    df.index.name = "class"
    return df


def _predictions_frame(
    yt: np.ndarray,
    yp: np.ndarray,
    names: list[str],
    probs: np.ndarray | None,
    paths: Sequence[Any] | None,
    confidence: Any,
) -> pd.DataFrame:
    n = len(yt)
    named = np.array(names + [other_name(names)], dtype=object)  # index -1 (OTHER) picks the last
    if confidence is not None:
        conf = np.asarray(confidence, dtype=float)
        if conf.shape != (n,):
            raise ValueError(f"confidence must have shape ({n},), got {conf.shape}")
    elif probs is not None:
        # Probability of the predicted class; unknown for OTHER unless the caller supplies it.
        conf = np.where(yp == OTHER, np.nan, probs[np.arange(n), np.maximum(yp, 0)])
    else:
        conf = np.full(n, np.nan)
    loss = true_class_loss(yt, probs) if probs is not None else np.full(n, np.nan)
    return pd.DataFrame(
        {
            "path": [str(x) for x in paths] if paths is not None else [""] * n,
            "true": named[yt],
            "predicted": named[yp],
            "confidence": conf,
            "loss": loss,
            "true_index": yt,
            "predicted_index": yp,
            "correct": yt == yp,
        }
    )


def _caption(row: pd.Series) -> str:
    conf = "" if pd.isna(row["confidence"]) else f" ({row['confidence']:.2f})"
    return f"{row['true']} / {row['predicted']}{conf}"


def save_evaluation(
    out_dir: str | Path,
    y_true: Any,
    y_pred: Any,
    class_names: Sequence[str],
    *,
    probs: Any = None,
    paths: Sequence[Any] | None = None,
    prefix: str = "",
    gallery_n: int = 16,
    title: str = "",
    confidence: Any = None,
    extra_columns: Mapping[str, Sequence[Any]] | None = None,
    top_k_confused: int = 10,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the evaluation bundle (metrics, reports, confusion matrices, predictions, plots) to out_dir.

    `confidence` overrides the per-sample confidence in predictions.csv (e.g. the 1000-way max
    probability for OTHER predictions); `extra_columns` are appended to predictions.csv.
    top_losses.png is drawn only when both paths and probs are given. `extra` entries (e.g. "ci")
    are added to metrics.json. Returns compute_metrics() (+ extra).
    """
    names = _check_names(class_names)
    yt, yp, p = _validate(y_true, y_pred, len(names), probs)
    if paths is not None and len(paths) != len(yt):
        raise ValueError(f"paths has {len(paths)} entries for {len(yt)} samples")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def dest(name: str) -> Path:
        return out / f"{prefix}{name}"

    metrics = {**compute_metrics(yt, yp, names, probs=p), **(extra or {})}
    atomic_write_json(dest("metrics.json"), metrics)

    report_kw = dict(labels=list(range(len(names))), target_names=names, zero_division=0)
    text = classification_report(yt, yp, digits=4, **report_kw)
    if metrics["other_predictions"]:
        text += (
            f"\n{metrics['other_predictions']} of {metrics['n']} predictions fall outside the "
            f"evaluated classes and count as errors; accuracy = {metrics['accuracy']:.4f}\n"
        )
    atomic_write_text(dest("classification_report.txt"), text)
    report = classification_report(yt, yp, output_dict=True, **report_kw)
    _write_csv(dest("classification_report.csv"), _report_frame(report, metrics["accuracy"], len(yt)))

    cm = confusion(yt, yp, len(names))
    cols = column_names(cm, names)
    for normalize, stem in ((False, "confusion_matrix"), (True, "confusion_matrix_normalized")):
        values = row_normalize(cm) if normalize else cm
        frame = pd.DataFrame(values, index=pd.Index(names, name="true"), columns=cols)
        _write_csv(dest(f"{stem}.csv"), frame)
        suffix = " (row-normalised)" if normalize else ""
        plot_confusion(cm, names, cols, dest(f"{stem}.png"), normalize=normalize,
                       title=f"{title or 'Confusion matrix'}{suffix}")

    confused = most_confused(cm, names, k=top_k_confused)
    _write_csv(
        dest("most_confused.csv"),
        pd.DataFrame(confused, columns=["true", "predicted", "count", "fraction_of_true"]),
        index=False,
    )

    preds = _predictions_frame(yt, yp, names, p, paths, confidence)
    for col, values in (extra_columns or {}).items():
        if len(values) != len(yt):
            raise ValueError(f"extra column {col!r} has {len(values)} entries for {len(yt)} samples")
        preds[col] = list(values)
    _write_csv(dest("predictions.csv"), preds, index=False)

    if paths is not None and p is not None and gallery_n > 0:
        worst = preds.sort_values("loss", ascending=False, kind="stable").head(gallery_n)
        items = [(row["path"], _caption(row)) for _, row in worst.iterrows()]
        plot_gallery(items, dest("top_losses.png"),
                     title=f"{title + ': ' if title else ''}top {len(items)} losses (true / predicted)")
    return metrics


def _write_csv(path: Path, df: pd.DataFrame, index: bool = True) -> None:
    atomic_write_text(path, df.to_csv(index=index))
