"""`train --seeds N`: sibling runs, mean ± sd summary, banded curves; finished seeds reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imagenette_lab.cli import main
from imagenette_lab.seeds import curve_band
from tests.helpers import make_dataset

TINY = ["model.name=test_resnet", "data.img_size=16", "data.batch_size=8", "data.workers=0",
        "data.augment=baseline", "train.amp=off", "data.holdout_frac=0.2"]


def test_curve_band_by_hand() -> None:
    h1 = pd.DataFrame({"epoch": [1, 2], "val_acc": [0.5, 0.7]})
    h2 = pd.DataFrame({"epoch": [1, 2], "val_acc": [0.7, np.nan]})
    band = curve_band([h1, h2], "val_acc")
    assert band["mean"].tolist() == pytest.approx([0.6, 0.7])
    assert band["sd"].tolist() == pytest.approx([np.std([0.5, 0.7], ddof=1), 0.0]) and band["n"].tolist() == [2, 1]


def test_train_seeds_writes_siblings_and_summary(tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "d", per_class={"train": 6, "val": 3}, bad_files=False)
    args = ["train", "--config", "exp2_scratch_cpu", "--root", str(data), "--out", str(tmp_path / "runs"),
            "--name", "s", "--epochs", "1", "--seeds", "2"] + [a for s in TINY for a in ("--set", s)]
    assert main(args) == 0
    assert "accuracy over 2 seeds" in capsys.readouterr().out
    runs = tmp_path / "runs"
    metas = [json.loads((runs / n / "run.json").read_text()) for n in ("s", "s_seed1")]
    summary = json.loads((runs / "s_seeds" / "summary.json").read_text())
    acc = [m["metrics"]["accuracy"] for m in metas]
    assert summary["kind"] == "seeds" and summary["n_seeds"] == 2
    assert summary["metrics"]["accuracy"]["mean"] == pytest.approx(np.mean(acc))
    assert summary["metrics"]["accuracy"]["sd"] == pytest.approx(np.std(acc, ddof=1))
    assert [r["seed"] for r in summary["per_seed"]] == [0, 1]
    table = pd.read_csv(runs / "s_seeds" / "summary.csv")
    assert table["accuracy"].tolist() == pytest.approx(acc)
    assert (runs / "s_seeds" / "curves_seeds.png").stat().st_size > 1000
    assert json.loads((runs / "s_seeds" / "run.json").read_text())["kind"] == "seeds"
    # A rerun reuses the finished seeds (no retraining) and rewrites the summary.
    before = (runs / "s" / "run.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (runs / "s" / "run.json").stat().st_mtime_ns == before
    assert main(args[:-len(TINY) * 2] + ["--seeds", "0"]) == 2
