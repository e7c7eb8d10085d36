"""Predictions: exact save/load round trip, derived values, class-list checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imagenette_lab.errors import UserError
from imagenette_lab.predictions import Predictions


def _random(n: int = 60, k: int = 4, columns=None, seed: int = 0) -> Predictions:
    rng = np.random.default_rng(seed)
    names = ["tench", "church", "parachute"] if columns is not None else [f"c{i}" for i in range(k)]
    logits = rng.normal(size=(n, k)).astype(np.float32)
    targets = rng.integers(0, len(names), n)
    return Predictions(logits, targets, np.arange(n) * 2, [f"/data/val/{i:03d}.JPEG" for i in range(n)], names,
                       columns=columns, fingerprint={"model": "abc", "data": "def"},
                       meta={"split": "val", "images_per_s": 12.5}, name="exp")


@pytest.mark.parametrize("columns", [None, [0, 5, 7]])
def test_save_load_round_trip_is_exact(tmp_path, columns) -> None:
    p = _random(k=4 if columns is None else 9, columns=columns)
    m = p.save(tmp_path / "eval", gallery_n=0)
    q = Predictions.load(tmp_path / "eval")
    for f in ("logits", "targets", "indices"):
        a, b = getattr(p, f), getattr(q, f)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), f
    assert q.paths == p.paths and q.class_names == p.class_names and q.name == "exp"
    assert q.fingerprint == p.fingerprint and q.meta == p.meta
    assert (q.columns is None) == (columns is None) and (columns is None or q.columns.tolist() == columns)
    assert q.metrics() == p.metrics()  # every number recomputes identically from the saved logits
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["accuracy"] == m["accuracy"] == p.metrics()["accuracy"]
    assert set(saved["ci"]) >= {"accuracy", "macro_precision", "macro_recall", "macro_f1", "per_class_recall",
                                "level", "n_boot", "method"} and saved["ci"]["n_boot"] >= 1000
    assert (tmp_path / "eval" / "predictions.csv").is_file()


def test_columns_mean_other_and_imagenet_top5() -> None:
    logits = np.zeros((3, 10), np.float32)
    logits[0, 2], logits[1, 9], logits[2, 7] = 5, 5, 5  # class 0, OTHER, class 2
    logits[1, 5] = 4  # second choice of item 1: class 1's column
    p = Predictions(logits, [0, 1, 2], [0, 1, 2], ["a", "b", "c"], ["x", "y", "z"], columns=[2, 5, 7])
    assert p.predicted().tolist() == [0, -1, 2]
    m = p.metrics(ci=False)
    assert m["accuracy"] == pytest.approx(2 / 3) and m["other_predictions"] == 1 and m["top5_accuracy"] == 1.0
    r = p.restrict()
    assert r.logits.shape == (3, 3) and r.predicted().tolist() == [0, 1, 2]
    assert p.confusion().shape == (3, 4)  # an 'other' column
    worst = p.top_losses(2)
    assert worst["path"].tolist()[0] == "b"
    assert list(worst.columns)[:5] == ["path", "index", "true", "predicted", "confidence"]


def test_class_list_mismatch_is_refused_without_remapping(tmp_path) -> None:
    p = _random()
    p.check_classes(["c0", "c1", "c2", "c3"])
    with pytest.raises(UserError, match=r"only in the dataset: d9; only in the predictions: c3"):
        p.check_classes(["c0", "c1", "c2", "d9"])
    with pytest.raises(UserError, match="same classes, other order"):
        p.check_classes(["c1", "c0", "c2", "c3"])
    with pytest.raises(UserError, match="outputs 4 scores per image but there are 3 class names"):
        Predictions(p.logits, p.targets % 3, p.indices, p.paths, ["a", "b", "c"])
    with pytest.raises(UserError, match="does not exist"):
        Predictions.load(tmp_path)
    (tmp_path / "predictions.npz").write_bytes(b"junk")
    with pytest.raises(UserError, match="unreadable"):
        Predictions.load(tmp_path)


def test_one_class_split_still_gets_cis(tmp_path) -> None:
    p = _random()
    one = p.subset(p.targets == 1)
    m = one.save(tmp_path / "one", gallery_n=0)
    assert m["ci"]["accuracy"][0] <= m["accuracy"] <= m["ci"]["accuracy"][1]
