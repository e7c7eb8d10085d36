"""Metrics against hand-computed expectations, consistency properties, and the evaluation bundle on disk."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imagenette_lab.metrics import (
    OTHER,
    compute_metrics,
    confusion,
    most_confused,
    paired_comparison,
    save_evaluation,
)

NAMES3 = ["cat", "dog", "fox"]
# 3 classes, known confusion [[2,1,0],[0,1,1],[1,0,3]] (rows = true).
YT3 = [0, 0, 0, 1, 1, 2, 2, 2, 2]
YP3 = [0, 0, 1, 1, 2, 2, 2, 2, 0]


def test_hand_computed_three_classes():
    m = compute_metrics(YT3, YP3, NAMES3)
    # Per class: tp / predicted, tp / support; here P == R for every class.
    expected = {"cat": (2 / 3, 3), "dog": (1 / 2, 2), "fox": (3 / 4, 4)}
    for name, (score, support) in expected.items():
        pc = m["per_class"][name]
        assert pc["precision"] == pytest.approx(score)
        assert pc["recall"] == pytest.approx(score)
        assert pc["f1"] == pytest.approx(score)
        assert pc["support"] == support
    assert m["n"] == 9 and m["num_classes"] == 3 and m["other_predictions"] == 0
    assert m["accuracy"] == pytest.approx(6 / 9)
    macro = (2 / 3 + 1 / 2 + 3 / 4) / 3
    assert m["macro_precision"] == pytest.approx(macro)
    assert m["macro_recall"] == pytest.approx(macro)
    assert m["macro_f1"] == pytest.approx(macro)
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2 + 4 * 3 / 4) / 9)
    assert "top5_accuracy" not in m and "mean_loss" not in m
    np.testing.assert_array_equal(confusion(YT3, YP3, 3), [[2, 1, 0], [0, 1, 1], [1, 0, 3]])
    json.dumps(m)  # JSON-able


def test_other_predictions_are_misses_never_false_positives():
    yt = [0, 0, 1, 1, 2, 2]
    yp = [0, OTHER, 1, 0, OTHER, 2]
    m = compute_metrics(yt, yp, NAMES3)
    assert m["other_predictions"] == 2
    assert m["accuracy"] == pytest.approx(0.5)
    # cat predicted twice (one right), dog/fox once each (right): OTHER adds no false positives.
    assert [m["per_class"][n]["precision"] for n in NAMES3] == pytest.approx([0.5, 1.0, 1.0])
    assert [m["per_class"][n]["recall"] for n in NAMES3] == pytest.approx([0.5, 0.5, 0.5])
    assert m["per_class"]["dog"]["f1"] == pytest.approx(2 / 3)
    assert m["weighted_recall"] == pytest.approx(m["accuracy"])
    assert m["macro_precision"] == pytest.approx(2.5 / 3)
    cm = confusion(yt, yp, 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]])


def test_perfect_predictions_score_one_everywhere():
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(10)]
    y = rng.permutation(np.repeat(np.arange(10), 5))
    probs = np.eye(10)[y]
    m = compute_metrics(y, y, names, probs=probs)
    for key in ("accuracy", "top5_accuracy", "macro_precision", "macro_recall", "macro_f1",
                "weighted_precision", "weighted_recall", "weighted_f1"):
        assert m[key] == pytest.approx(1.0), key
    assert all(pc["f1"] == pytest.approx(1.0) and pc["support"] == 5 for pc in m["per_class"].values())
    assert m["mean_loss"] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_array_equal(confusion(y, y, 10), np.diag([5] * 10))


def test_random_predictions_are_self_consistent():
    rng = np.random.default_rng(1)
    c, n = 6, 300
    yt = rng.integers(0, c, n)
    yp = np.where(rng.random(n) < 0.6, yt, rng.integers(-1, c, n))  # includes OTHER
    names = [f"k{i}" for i in range(c)]
    m = compute_metrics(yt, yp, names)
    cm = confusion(yt, yp, c)
    assert cm.shape == (c, c + 1) and cm.sum() == n and cm[:, -1].sum() == m["other_predictions"]
    assert m["accuracy"] == pytest.approx(np.trace(cm[:, :c]) / n)
    assert m["weighted_recall"] == pytest.approx(m["accuracy"])
    for i, name in enumerate(names):
        pc = m["per_class"][name]
        assert pc["support"] == cm[i].sum()
        assert pc["recall"] == pytest.approx(cm[i, i] / cm[i].sum())
        assert pc["precision"] == pytest.approx(cm[i, i] / cm[:, i].sum())  # "other" column excluded
    assert m["macro_f1"] == pytest.approx(np.mean([m["per_class"][x]["f1"] for x in names]))


def test_top5_and_loss_hand_computed():
    names = [f"c{i}" for i in range(6)]
    # Rank of the true class: 1st, 5th, 6th -> top-5 accuracy 2/3.
    base = np.array([0.30, 0.25, 0.20, 0.12, 0.08, 0.05])
    probs = np.stack([base, np.roll(base, 1), base])
    # row 0: class 0 = .30 (rank 1); row 1 (rolled): class 5 = .08 (rank 5); row 2: class 5 = .05 (rank 6)
    yt = [0, 5, 5]
    m = compute_metrics(yt, [0, 1, 0], names, probs=probs)
    assert m["top5_accuracy"] == pytest.approx(2 / 3)
    assert m["mean_loss"] == pytest.approx(-(math.log(0.30) + math.log(0.08) + math.log(0.05)) / 3)
    # 5 classes or fewer: top-5 is trivially 1.0 and left out.
    assert "top5_accuracy" not in compute_metrics([0, 1], [0, 1], names[:5], probs=np.eye(5)[:2])


def test_imagenet_index_space_predictions_are_rejected():
    # The study's bug shape: right classes, but as ImageNet-1k indices (tench=0, springer=217, ...).
    yt = [0, 1, 2, 3]
    yp = [0, 217, 482, 491]
    with pytest.raises(ValueError, match="index space"):
        compute_metrics(yt, yp, [f"c{i}" for i in range(10)])
    with pytest.raises(ValueError):
        confusion(yt, yp, 10)


@pytest.mark.parametrize(
    "yt, yp, names, probs",
    [
        ([0, 3], [0, 1], NAMES3, None),  # y_true out of range
        ([0, -1], [0, 1], NAMES3, None),  # OTHER is not a valid true label
        ([0, 1], [0, -2], NAMES3, None),  # negative but not OTHER
        ([0, 1, 2], [0, 1], NAMES3, None),  # length mismatch
        ([], [], NAMES3, None),  # nothing to evaluate
        ([0, 1], [0, 1], ["a", "a", "b"], None),  # duplicate names
        ([0, 2], [0, 2], ["a", "b"], None),  # fewer names than labels
        ([0, 1], [0, 0.5], NAMES3, None),  # non-integer label
        ([0, 1], [0, 1], NAMES3, np.ones((2, 2)) / 2),  # probs wrong shape
        ([0, 1], [0, 1], NAMES3, [[3.0, -1, 0], [0, 2, 1]]),  # logits, not probabilities
    ],
)
def test_invalid_inputs_raise(yt, yp, names, probs):
    with pytest.raises(ValueError):
        compute_metrics(yt, yp, names, probs=probs)


def test_whole_number_float_labels_accepted():
    m = compute_metrics(np.array(YT3, float), np.array(YP3, float), NAMES3)
    assert m["accuracy"] == pytest.approx(6 / 9)


def test_most_confused_sorted_with_other_column():
    cm = np.array([[5, 3, 0, 1], [1, 4, 0, 0], [0, 2, 6, 0]])
    got = most_confused(cm, NAMES3, k=3)
    assert [(d["true"], d["predicted"], d["count"]) for d in got] == [
        ("cat", "dog", 3), ("fox", "dog", 2), ("cat", "other", 1)]
    assert got[0]["fraction_of_true"] == pytest.approx(3 / 9)
    assert got[1]["fraction_of_true"] == pytest.approx(2 / 8)
    assert len(most_confused(cm, NAMES3)) == 4  # only non-zero off-diagonal cells
    assert most_confused(np.eye(3, dtype=int), NAMES3) == []


# ---- save_evaluation -------------------------------------------------------------------------

FILES = [
    "metrics.json", "classification_report.csv", "classification_report.txt", "confusion_matrix.csv",
    "confusion_matrix_normalized.csv", "confusion_matrix.png", "confusion_matrix_normalized.png",
    "most_confused.csv", "predictions.csv",
]


def _images(tmp_path, n):
    paths = []
    for i in range(n):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.new("RGB", (20 + i, 16), (i * 20 % 256, 100, 200)).save(p)
        paths.append(p)
    bad = tmp_path / "img" / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    paths[1] = bad  # corrupt
    paths[2] = tmp_path / "img" / "missing.png"  # does not exist
    return paths


def test_save_evaluation_writes_consistent_bundle(tmp_path):
    names = ["tench", "English springer", "cassette player", "chain saw", "church"]
    rng = np.random.default_rng(2)
    n = 12
    yt = rng.integers(0, 5, n)
    logits = rng.normal(size=(n, 5))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    yp = probs.argmax(1)
    yp[0] = OTHER
    paths = _images(tmp_path, n)
    out = tmp_path / "eval"
    m = save_evaluation(out, yt, yp, names, probs=probs, paths=paths, prefix="restricted_",
                        gallery_n=6, title="test", extra_columns={"imagenet_pred": ["x"] * n})
    for f in FILES + ["top_losses.png"]:
        assert (out / f"restricted_{f}").is_file(), f
    assert m == compute_metrics(yt, yp, names, probs=probs)
    assert json.loads((out / "restricted_metrics.json").read_text()) == m

    rep = pd.read_csv(out / "restricted_classification_report.csv", index_col=0)
    for name in names:
        pc = m["per_class"][name]
        assert rep.loc[name, "precision"] == pytest.approx(pc["precision"])
        assert rep.loc[name, "recall"] == pytest.approx(pc["recall"])
        assert rep.loc[name, "f1-score"] == pytest.approx(pc["f1"])
        assert rep.loc[name, "support"] == pc["support"]
    assert rep.loc["macro avg", "f1-score"] == pytest.approx(m["macro_f1"])
    assert rep.loc["weighted avg", "precision"] == pytest.approx(m["weighted_precision"])
    assert rep.loc["accuracy", "f1-score"] == pytest.approx(m["accuracy"])
    assert "outside the evaluated classes" in (out / "restricted_classification_report.txt").read_text()

    cm = pd.read_csv(out / "restricted_confusion_matrix.csv", index_col=0)
    assert list(cm.index) == names and list(cm.columns) == names + ["other"]
    np.testing.assert_array_equal(cm.to_numpy(), confusion(yt, yp, 5))
    cmn = pd.read_csv(out / "restricted_confusion_matrix_normalized.csv", index_col=0).to_numpy()
    support = np.bincount(yt, minlength=5)
    np.testing.assert_allclose(cmn.sum(1), (support > 0).astype(float))
    np.testing.assert_allclose(cmn * support[:, None], cm.to_numpy(), atol=1e-9)

    mc = pd.read_csv(out / "restricted_most_confused.csv")
    assert list(mc.columns) == ["true", "predicted", "count", "fraction_of_true"]
    assert mc["count"].sum() <= n - round(m["accuracy"] * n)

    pr = pd.read_csv(out / "restricted_predictions.csv", keep_default_na=False, na_values=[""])
    assert list(pr.columns[:5]) == ["path", "true", "predicted", "confidence", "loss"]
    assert pr["path"].tolist() == [str(p) for p in paths]
    assert pr["true"].tolist() == [names[i] for i in yt]
    assert pr.loc[0, "predicted"] == "other" and math.isnan(pr.loc[0, "confidence"])
    assert pr.loc[1, "predicted"] == names[yp[1]]
    assert pr.loc[1, "confidence"] == pytest.approx(probs[1].max())
    np.testing.assert_allclose(pr["loss"], -np.log(probs[np.arange(n), yt]), rtol=1e-9)
    assert pr["imagenet_pred"].tolist() == ["x"] * n

    for f in FILES + ["top_losses.png"]:
        if f.endswith(".png"):
            with Image.open(out / f"restricted_{f}") as im:
                im.verify()


def test_save_evaluation_without_probs_or_paths(tmp_path):
    m = save_evaluation(tmp_path, YT3, YP3, NAMES3)
    for f in FILES:
        assert (tmp_path / f).is_file(), f
    assert not (tmp_path / "top_losses.png").exists()
    assert "top5_accuracy" not in m
    pr = pd.read_csv(tmp_path / "predictions.csv")
    assert pr["loss"].isna().all() and pr["confidence"].isna().all()
    assert pr["correct"].sum() == 6
    cm = pd.read_csv(tmp_path / "confusion_matrix.csv", index_col=0)
    assert list(cm.columns) == NAMES3  # no "other" column without OTHER predictions


def test_save_evaluation_rejects_mismatched_paths(tmp_path):
    with pytest.raises(ValueError):
        save_evaluation(tmp_path, YT3, YP3, NAMES3, paths=["a.png"])


def test_class_named_other_does_not_clash(tmp_path):
    names = ["other", "cat"]
    save_evaluation(tmp_path, [0, 1, 1], [0, OTHER, 1], names)
    cm = pd.read_csv(tmp_path / "confusion_matrix.csv", index_col=0)
    assert list(cm.columns) == ["other", "cat", "(other)"]
    np.testing.assert_array_equal(cm.to_numpy(), [[1, 0, 0], [0, 1, 1]])
    pr = pd.read_csv(tmp_path / "predictions.csv")
    assert pr["predicted"].tolist() == ["other", "(other)", "cat"]


def test_paired_comparison_hand_computed():
    y = [0, 1, 2, 0, 1, 2, 0, 1]
    a = [0, 1, 2, 0, 1, 2, 1, 0]  # wrong on items 6, 7
    b = [0, 1, 0, 1, 2, 2, 0, 1]  # wrong on items 2, 3, 4
    out = paired_comparison(y, a, b, names=("head", "probe"))
    assert out["n"] == 8 and out["head_accuracy"] == 6 / 8 and out["probe_accuracy"] == 5 / 8
    assert out["head_only_correct"] == 3 and out["probe_only_correct"] == 2
    assert out["mcnemar_exact_p"] == 1.0  # 3 vs 2 discordant: no evidence either way
    lopsided = paired_comparison([0, 1] * 6, [0, 1] * 6, [1, 0] * 6)
    assert lopsided["a_only_correct"] == 12 and lopsided["mcnemar_exact_p"] == 2 * 0.5**12
    one_class = paired_comparison([0] * 12, [0] * 12, [1] * 12)  # one class: the test is skipped, with a reason
    assert one_class["mcnemar_exact_p"] is None and "one class" in one_class["skipped"]
    assert paired_comparison([0, 1], [0, 1], [0, 1])["mcnemar_exact_p"] == 1.0
    with pytest.raises(ValueError, match="same non-zero number"):
        paired_comparison([0, 1], [0], [0, 1])

