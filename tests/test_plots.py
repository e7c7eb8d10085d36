"""Plots render to valid PNGs, tolerate NaNs and unreadable images, and draw what they were given."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imagenette_lab.plots import history_frame, plot_confusion, plot_gallery, plot_history, row_normalize


def _open(png) -> np.ndarray:
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        return np.asarray(im.convert("RGB"))


def _has_colour(pixels: np.ndarray, rgb, tol=6, min_px=2000) -> bool:
    """A filled area of this colour, not just a few anti-aliased text pixels."""
    return int((np.abs(pixels.astype(int) - np.array(rgb)).max(axis=2) <= tol).sum()) >= min_px


def test_row_normalize_zero_row_stays_zero():
    got = row_normalize(np.array([[2, 2], [0, 0], [1, 3]]))
    np.testing.assert_allclose(got, [[0.5, 0.5], [0, 0], [0.25, 0.75]])


@pytest.mark.parametrize("normalize", [False, True])
def test_plot_confusion_counts_and_fractions(tmp_path, normalize):
    cm = np.array([[5, 1, 0, 2], [0, 0, 0, 0], [1, 2, 7, 0]])
    out = tmp_path / "sub" / "cm.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the empty row must not divide by zero
        plot_confusion(cm, ["a", "b", "c"], ["a", "b", "c", "other"], out, normalize=normalize, title="t")
    px = _open(out)
    assert px.shape[0] > 100 and px.shape[1] > 100
    assert px.min() < 100  # something dark was drawn (cells / text), not a blank canvas


def test_plot_confusion_many_classes_and_bad_shape(tmp_path):
    n = 40
    plot_confusion(np.eye(n, dtype=int) * 3, [f"c{i}" for i in range(n)], [f"c{i}" for i in range(n)],
                   tmp_path / "big.png")
    _open(tmp_path / "big.png")
    with pytest.raises(ValueError):
        plot_confusion(np.eye(3), ["a", "b"], ["a", "b"], tmp_path / "bad.png")


def test_history_frame_fills_missing_columns_and_epochs():
    df = history_frame([{"train_loss": 1.0, "val_acc": "nan"}, {"train_loss": None, "val_acc": 0.5}])
    assert list(df.columns) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    assert df["epoch"].tolist() == [1.0, 2.0]
    assert df["train_loss"].iloc[0] == 1.0 and np.isnan(df["train_loss"].iloc[1])
    assert np.isnan(df["val_acc"].iloc[0]) and df["val_acc"].iloc[1] == 0.5
    assert df["train_acc"].isna().all()
    kept = history_frame(pd.DataFrame({"epoch": [3, 4], "val_loss": [0.9, 0.8]}))
    assert kept["epoch"].tolist() == [3.0, 4.0]


def test_plot_history_with_nans_and_empty(tmp_path):
    hist = [
        {"epoch": 1, "train_loss": float("nan"), "train_acc": float("nan"), "val_loss": 1.2, "val_acc": 0.4},
        {"epoch": 2, "train_loss": 0.9, "train_acc": 0.6, "val_loss": 1.0, "val_acc": 0.5},
        {"epoch": 3, "train_loss": 0.7, "train_acc": 0.7, "val_loss": float("nan"), "val_acc": 0.55},
    ]
    plot_history(hist, tmp_path / "h.png", title="Exp2")
    plot_history(pd.DataFrame(hist).drop(columns=["val_loss"]), tmp_path / "h2.png")
    plot_history([], tmp_path / "empty.png")
    for f in ("h.png", "h2.png", "empty.png"):
        px = _open(tmp_path / f)
        assert px.shape[1] > px.shape[0]  # two panels side by side


def test_plot_gallery_draws_images_and_grey_tiles(tmp_path):
    red = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (230, 10, 10)).save(red)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xffgarbage")
    out = tmp_path / "g.png"
    plot_gallery([(red, "tench / tench (0.99)"), (corrupt, "a / b"), (tmp_path / "nope.png", "c / d"),
                  (None, "e / f")], out, ncols=2)
    px = _open(out)
    assert _has_colour(px, (230, 10, 10))  # the real thumbnail
    assert _has_colour(px, (128, 128, 128))  # the grey placeholder tiles

    only_bad = tmp_path / "bad.png"
    plot_gallery([(corrupt, "x")], only_bad)
    px = _open(only_bad)
    assert _has_colour(px, (128, 128, 128)) and not _has_colour(px, (230, 10, 10))

    plot_gallery([], tmp_path / "none.png")
    _open(tmp_path / "none.png")
