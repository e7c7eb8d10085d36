"""Known answers for the statistics: bootstrap coverage, McNemar vs the binomial, Holm by hand."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from imagenette_lab.errors import UserError
from imagenette_lab.metrics import compute_metrics, paired_comparison
from imagenette_lab.predictions import Predictions
from imagenette_lab.stats import bootstrap_ci, compare, compare_all, holm, mcnemar_exact, paired_table


def test_bootstrap_coverage_near_95_percent() -> None:
    """Many small simulated test sets with known per-class accuracy: the 95 % CI covers the truth ~95 %."""
    rng = np.random.default_rng(1)
    p_class = np.array([0.9, 0.8, 0.7])
    per, sims = 40, 300
    y = np.repeat(np.arange(3), per)
    truth_acc = p_class.mean()  # equal class counts: accuracy = macro recall = mean per-class accuracy
    hits = {"accuracy": 0, "macro_recall": 0, "recall_2": 0}
    for s in range(sims):
        correct = rng.random(len(y)) < p_class[y]
        wrong = (y + 1 + rng.integers(0, 2, len(y))) % 3
        pred = np.where(correct, y, wrong)
        ci = bootstrap_ci(y, pred, ["a", "b", "c"], seed=s)
        hits["accuracy"] += ci["accuracy"][0] <= truth_acc <= ci["accuracy"][1]
        hits["macro_recall"] += ci["macro_recall"][0] <= truth_acc <= ci["macro_recall"][1]
        hits["recall_2"] += ci["per_class_recall"]["c"][0] <= p_class[2] <= ci["per_class_recall"]["c"][1]
    for key, h in hits.items():
        assert 0.90 <= h / sims <= 0.985, (key, h / sims)


def test_bootstrap_is_seeded_contains_the_estimate_and_is_fast() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 4000)
    pred = np.where(rng.random(4000) < 0.9, y, rng.integers(0, 10, 4000))
    pred[:7] = -1  # OTHER predictions are errors
    names = [f"c{i}" for i in range(10)]
    t0 = time.perf_counter()
    ci = bootstrap_ci(y, pred, names)
    assert time.perf_counter() - t0 < 5.0
    assert ci == bootstrap_ci(y, pred, names)
    assert ci["level"] == 0.95 and ci["n_boot"] == 1000 and set(ci["per_class_recall"]) == set(names)
    m = compute_metrics(y, pred, names)
    for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
        lo, hi = ci[k]
        assert lo <= m[k] <= hi and 0 < hi - lo < 0.05, k


def test_one_class_split_gets_cis_and_skips_the_paired_test(caplog) -> None:
    y = np.zeros(50, dtype=int)
    a = np.r_[np.zeros(45, int), np.ones(5, int)]
    ci = bootstrap_ci(y, a, ["only", "never"])
    assert ci["accuracy"][0] < 0.9 < ci["accuracy"][1]
    assert ci["per_class_recall"]["never"] == [0.0, 0.0]
    out = paired_table(y, a, np.zeros(50, int))
    assert out["mcnemar_exact_p"] is None and "one class" in out["skipped"]


def test_mcnemar_matches_a_direct_binomial_computation() -> None:
    # Discordant pairs 7 vs 2: two-sided p = 2 * P(X <= 2), X ~ Binomial(9, 1/2).
    direct = 2 * sum(math.comb(9, k) for k in range(3)) / 2**9
    assert mcnemar_exact(7, 2) == pytest.approx(direct, rel=1e-12) == pytest.approx(92 / 512)
    assert mcnemar_exact(2, 7) == mcnemar_exact(7, 2)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0
    # The same counts from a hand-made table of predictions.
    y = np.zeros(20, int)
    a = np.r_[np.zeros(10, int), np.zeros(7, int), np.ones(2, int), np.ones(1, int)]
    b = np.r_[np.zeros(10, int), np.ones(7, int), np.zeros(2, int), np.ones(1, int)]
    y[-1] = 1  # two classes present; last item: both right
    out = paired_table(y, a, b)
    assert out["table"] == [[11, 7], [2, 0]] and out["mcnemar_exact_p"] == pytest.approx(direct)
    assert paired_comparison(y, a, b)["mcnemar_exact_p"] == out["mcnemar_exact_p"]  # one implementation


def test_holm_on_known_p_values() -> None:
    adjusted, reject = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert reject == [True, False, False, True]
    assert holm([]) == ([], [])
    assert holm([0.6, 0.9])[0] == [1.0, 1.0]


def _preds(paths, targets, pred, names=("a", "b")) -> Predictions:
    logits = np.full((len(paths), len(names)), -1.0, np.float32)
    logits[np.arange(len(paths)), pred] = 1.0
    return Predictions(logits, targets, np.arange(len(paths)), paths, list(names))


def test_compare_pairs_by_path_and_refuses_other_files() -> None:
    paths = [f"/d/{i}.jpg" for i in range(12)]
    y = np.array([0, 1] * 6)
    a = _preds(paths, y, y)  # all right
    b = _preds(paths, y, 1 - y)  # all wrong
    flipped = b.subset(np.arange(12)[::-1])  # another loader order: matched by path
    out = compare(a, flipped, names=("exp1", "exp3"))
    assert out["table"] == [[0, 12], [0, 0]] and out["mcnemar_exact_p"] == pytest.approx(2 * 0.5**12)
    with pytest.raises(UserError, match=r"12 vs 11 images; first only in exp1: /d/9.jpg"):
        compare(a, b.subset(np.arange(12) != 9), names=("exp1", "exp3"))
    other = _preds(paths[:-1] + ["/e/x.jpg"], y, y)
    with pytest.raises(UserError, match=r"12 vs 12 images; first only in a: /d/11.jpg"):
        compare(a, other)
    with pytest.raises(UserError, match="different class lists"):
        compare(a, _preds(paths, y, y, names=("a", "c")))


def test_compare_all_applies_holm_and_lists_refusals() -> None:
    paths = [f"/d/{i}.jpg" for i in range(40)]
    y = np.array([0, 1] * 20)
    good = _preds(paths, y, y)
    bad = _preds(paths, y, np.where(np.arange(40) < 12, 1 - y, y))  # 12 more mistakes
    elsewhere = _preds([p.replace("/d/", "/e/") for p in paths], y, y)
    rows = compare_all({"exp1": bad, "exp3": good, "other": elsewhere})
    by = {(r["a"], r["b"]): r for r in rows}
    r = by[("exp1", "exp3")]
    assert r["table"] == [[28, 0], [12, 0]] and r["mcnemar_exact_p"] == pytest.approx(2 * 0.5**12)
    assert r["p_holm"] == pytest.approx(r["mcnemar_exact_p"]) and r["significant"]  # the only testable pair
    assert "different files" in by[("exp1", "other")]["refused"] and "p_holm" not in by[("exp3", "other")]
