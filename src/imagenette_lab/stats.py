"""Uncertainty for every number we print: stratified bootstrap CIs, McNemar's exact test, Holm correction.

`bootstrap_ci` is hand-vectorised numpy rather than `scipy.stats.bootstrap`: scipy cannot resample
within strata, and one bincount over all resamples gives every metric (accuracy, macro P/R/F1,
per-class recall) from the same confusion matrices in well under a second for 4,000 predictions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from imagenette_lab.errors import UserError

log = logging.getLogger(__name__)

OTHER = -1  # a prediction outside the evaluated classes (metrics.OTHER)
CI_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1")


def _confusions(y_true: np.ndarray, y_pred: np.ndarray, c: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, C, C+1) confusion matrices of resamples drawn with replacement within each true class."""
    rng = np.random.default_rng(seed)
    k = c + 1  # last column: OTHER
    pred = np.where(y_pred == OTHER, c, y_pred).astype(np.int64)
    flat = np.zeros(n_boot * c * k, dtype=np.int64)
    offsets = (np.arange(n_boot, dtype=np.int64) * c * k)[:, None]
    for cls in range(c):
        members = np.flatnonzero(y_true == cls)
        if members.size == 0:
            continue
        draw = pred[members][rng.integers(0, members.size, size=(n_boot, members.size))]
        flat += np.bincount((offsets + cls * k + draw).ravel(), minlength=flat.size)
    return flat.reshape(n_boot, c, k)


def _scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of each (.., C, C+1) confusion matrix, as sklearn computes them (zero_division=0)."""
    c = cm.shape[-2]
    tp = np.diagonal(cm[..., :c], axis1=-2, axis2=-1).astype(float)
    support = cm.sum(-1).astype(float)
    predicted = cm[..., :c].sum(-2).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "accuracy": tp.sum(-1) / np.maximum(support.sum(-1), 1),
        "macro_precision": precision.mean(-1),
        "macro_recall": recall.mean(-1),
        "macro_f1": f1.mean(-1),
        "per_class_recall": recall,
    }


def bootstrap_ci(
    y_true: Any,
    y_pred: Any,
    class_names: Sequence[str],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile CIs from a bootstrap stratified by true class (class counts fixed, as in the split).

    Returns {"accuracy": [lo, hi], "macro_precision", "macro_recall", "macro_f1",
    "per_class_recall": {name: [lo, hi]}, "level", "n_boot", "seed", "method"}; predictions may hold
    OTHER (-1). A split with one class still gets intervals (one stratum).
    """
    yt, yp = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    names = [str(n) for n in class_names]
    if yt.shape != yp.shape or yt.ndim != 1 or yt.size == 0:
        raise ValueError(f"need two 1-D label arrays of the same non-zero length, got {yt.shape} and {yp.shape}")
    if n_boot < 100 or not 0 < level < 1:
        raise ValueError("n_boot must be >= 100 and level in (0, 1)")
    scores = _scores(_confusions(yt, yp, len(names), n_boot, seed))
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def interval(values: np.ndarray) -> list[float]:
        lo, hi = np.percentile(values, q)
        return [round(float(lo), 6), round(float(hi), 6)]

    out: dict[str, Any] = {k: interval(scores[k]) for k in CI_KEYS}
    out["per_class_recall"] = {n: interval(scores["per_class_recall"][:, i]) for i, n in enumerate(names)}
    out.update(level=level, n_boot=n_boot, seed=seed,
               method="percentile bootstrap, resampled within each true class")
    return out


# ----------------------------------------------------------------------------- paired tests
def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p: the discordant pairs are Binomial(a_only + b_only, 1/2) under H0."""
    from scipy.stats import binomtest

    a_only, b_only = int(a_only), int(b_only)
    if a_only < 0 or b_only < 0:
        raise ValueError("discordant counts must be >= 0")
    if a_only + b_only == 0:
        return 1.0
    return float(binomtest(a_only, a_only + b_only, 0.5).pvalue)


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[list[float], list[bool]]:
    """Holm-Bonferroni step-down: (adjusted p-values, reject at `alpha`) in the input order."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    if m == 0:
        return [], []
    order = np.argsort(p, kind="stable")
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return [float(x) for x in adjusted], [bool(x <= alpha) for x in adjusted]


def paired_table(y_true: Any, pred_a: Any, pred_b: Any, names: tuple[str, str] = ("a", "b")) -> dict[str, Any]:
    """Two classifiers on the same items: accuracies, the 2x2 table of right/wrong, McNemar's exact p.

    `table` = [[both right, only a right], [only b right, both wrong]]. On a small val set a gap of
    a few items is noise; only the discordant items carry evidence.
    """
    yt, a, b = (np.asarray(x, dtype=np.int64) for x in (y_true, pred_a, pred_b))
    if not len(yt) == len(a) == len(b) or len(yt) == 0:
        raise ValueError(f"need the same non-zero number of labels and predictions, got {len(yt)}/{len(a)}/{len(b)}")
    ra, rb = a == yt, b == yt
    table = [[int((ra & rb).sum()), int((ra & ~rb).sum())], [int((~ra & rb).sum()), int((~ra & ~rb).sum())]]
    out: dict[str, Any] = {
        "n": int(len(yt)),
        f"{names[0]}_accuracy": float(ra.mean()),
        f"{names[1]}_accuracy": float(rb.mean()),
        f"{names[0]}_only_correct": table[0][1],
        f"{names[1]}_only_correct": table[1][0],
        "table": table,
        "mcnemar_exact_p": mcnemar_exact(table[0][1], table[1][0]),
    }
    if len(np.unique(yt)) < 2:
        out["mcnemar_exact_p"] = None
        out["skipped"] = "the split has one class: the paired test is skipped (accuracy = that class's recall)"
        log.warning("%s vs %s: %s", names[0], names[1], out["skipped"])
    return out


def _names(p: Any, fallback: str) -> str:
    return str(getattr(p, "name", None) or fallback)


def check_same_items(pred_a: Any, pred_b: Any, names: tuple[str, str] = ("a", "b")) -> None:
    """Refuse two Predictions that were not scored on the same files, classes and labels."""
    a, b = names
    if list(pred_a.class_names) != list(pred_b.class_names):
        raise UserError(f"{a} and {b} were scored on different class lists "
                        f"({len(pred_a.class_names)} vs {len(pred_b.class_names)} classes)")
    pa, pb = list(pred_a.paths), list(pred_b.paths)
    sa, sb = set(pa), set(pb)
    only_a, only_b = [p for p in pa if p not in sb], [p for p in pb if p not in sa]
    if only_a or only_b or len(pa) != len(pb):
        first = (f"first only in {a}: {only_a[0]}" if only_a else
                 f"first only in {b}: {only_b[0]}" if only_b else "the same files, repeated differently")
        raise UserError(f"{a} and {b} were scored on different files ({len(pa)} vs {len(pb)} images; {first})")
    for i, (x, y) in enumerate(zip(pa, pb)):
        if x != y:
            raise UserError(f"{a} and {b} list the same files in another order (item {i}: {x} vs {y})")
    if not np.array_equal(pred_a.targets, pred_b.targets):
        i = int(np.flatnonzero(np.asarray(pred_a.targets) != np.asarray(pred_b.targets))[0])
        raise UserError(f"{a} and {b} give {pa[i]} different labels")


def compare(pred_a: Any, pred_b: Any, names: tuple[str, str] | None = None) -> dict[str, Any]:
    """McNemar's exact test of two Predictions on the same files (refused, naming the mismatch, otherwise).

    Items are matched by path (both are sorted by path first, so loader order does not matter).
    """
    names = names or (_names(pred_a, "a"), _names(pred_b, "b"))
    if names[0] == names[1]:
        names = (f"{names[0]}_a", f"{names[1]}_b")
    a, b = pred_a.sorted_by_path(), pred_b.sorted_by_path()
    check_same_items(a, b, names)
    out = paired_table(a.targets, a.predicted(), b.predicted(), names=("a", "b"))
    out["names"] = list(names)
    return out


def compare_all(named: Mapping[str, Any], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Every pair of named Predictions: McNemar exact + Holm across the pairs that could be tested.

    Rows: {"a", "b", ...compare() fields, "p_holm", "significant"}; a pair scored on different files
    gets {"a", "b", "refused": message} and a one-class pair {"skipped": message}; neither enters Holm.
    """
    names = list(named)
    rows: list[dict[str, Any]] = []
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            try:
                rows.append({"a": x, "b": y, **compare(named[x], named[y], names=(x, y))})
            except UserError as e:
                rows.append({"a": x, "b": y, "refused": str(e)})
    tested = [r for r in rows if r.get("mcnemar_exact_p") is not None]
    adjusted, reject = holm([r["mcnemar_exact_p"] for r in tested], alpha)
    for r, p, sig in zip(tested, adjusted, reject):
        r["p_holm"], r["significant"] = p, sig
    return rows
