"""Likely label errors: out-of-fold probabilities from a linear probe, ranked by cleanlab.

Each image is scored by a logistic regression that never saw it (stratified k-fold, seeded), on the
frozen-backbone embeddings. cleanlab's confident learning then picks the images whose given label
disagrees with what the rest of the data says; they are ranked by self-confidence (the out-of-fold
probability of the given label), lowest first.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from imagenette_lab.errors import UserError

log = logging.getLogger(__name__)


def require_cleanlab():
    try:
        import cleanlab.filter
        import cleanlab.rank
    except ImportError:
        raise UserError("the audit needs cleanlab: pip install 'imagenette-lab[audit]'") from None
    return cleanlab


def out_of_fold_probs(x: np.ndarray, y: np.ndarray, folds: int, seed: int, c: float = 1.0) -> np.ndarray:
    """(N, K) probabilities, each row from the fold model that held that image out."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000, random_state=seed))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(clf, x, y, cv=cv, method="predict_proba")


def plan(y: np.ndarray, num_classes: int, folds: int) -> tuple[np.ndarray, int, list[str]]:
    """(classes usable for k-fold, k, messages). Classes with < 2 images cannot be held out and
    still trained on, so they are left out; k is capped by the smallest remaining class."""
    counts = np.bincount(y, minlength=num_classes)
    usable = np.nonzero(counts >= 2)[0]
    notes = []
    dropped = np.nonzero((counts > 0) & (counts < 2))[0]
    if len(dropped):
        notes.append(f"{len(dropped)} class(es) with a single image left out of the label check")
    if len(usable) < 2:
        return usable, 0, notes + ["label-error check skipped: it needs at least two classes with "
                                   "two or more images each"]
    k = int(min(folds, counts[usable].min()))
    if k < folds:
        notes.append(f"k-fold reduced from {folds} to {k}: the smallest class has only "
                     f"{int(counts[usable].min())} images")
    return usable, k, notes


def find_label_issues(x: np.ndarray, y: np.ndarray, num_classes: int, *, folds: int, seed: int,
                      c: float = 1.0) -> tuple[dict[str, Any], np.ndarray | None]:
    """Rank likely label errors among the rows of `x` (labels `y` in 0..num_classes-1).

    Returns (info, table) where table is a structured result with one entry per suspect, ranked:
    row (into x), given, suggested, score (self-confidence), p_suggested; None when skipped.
    """
    usable, k, notes = plan(y, num_classes, folds)
    for n in notes:
        log.warning("%s", n)
    info: dict[str, Any] = {"folds": k, "folds_requested": folds, "notes": notes, "seed": seed}
    if k < 2:
        info["skipped"] = notes[-1]
        return info, None
    cleanlab = require_cleanlab()
    rows = np.nonzero(np.isin(y, usable))[0]
    remap = np.full(num_classes, -1)
    remap[usable] = np.arange(len(usable))
    yy = remap[y[rows]]
    probs = out_of_fold_probs(x[rows], yy, k, seed, c)
    ranked = cleanlab.filter.find_label_issues(yy, probs, return_indices_ranked_by="self_confidence")
    quality = cleanlab.rank.get_label_quality_scores(yy, probs, method="self_confidence")
    suggested = probs.argmax(1)
    info.update({
        "images": int(len(rows)),
        "classes": int(len(usable)),
        "oof_accuracy": round(float((suggested == yy).mean()), 4),
        "issues": int(len(ranked)),
        "method": f"{k}-fold logistic regression (C={c}) on standardised embeddings; "
                  "cleanlab.filter.find_label_issues ranked by self_confidence",
    })
    table = np.zeros(len(ranked), dtype=[("row", np.int64), ("given", np.int64), ("suggested", np.int64),
                                          ("score", np.float64), ("p_suggested", np.float64)])
    table["row"] = rows[ranked]
    table["given"] = usable[yy[ranked]]
    table["suggested"] = usable[suggested[ranked]]
    table["score"] = quality[ranked]
    table["p_suggested"] = probs[ranked, suggested[ranked]]
    return info, table
