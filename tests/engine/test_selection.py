"""Honest selection (holdout slice of train) and `evaluate` reproducing training's final metrics exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imagenette_lab.cli import main
from imagenette_lab.config import load_config
from imagenette_lab.data.dataset import index_split
from imagenette_lab.engine import selection as sel
from imagenette_lab.engine.train import train
from imagenette_lab.errors import UserError
from imagenette_lab.predictions import Predictions
from tests.helpers import TINY_CLASSES, make_dataset

TINY = ["model.name=test_resnet", "data.img_size=16", "data.batch_size=8", "data.workers=0",
        "data.augment=baseline", "train.amp=off", "train.epochs=3", "data.holdout_frac=0.2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("sel") / "tiny", per_class={"train": 10, "val": 4}, bad_files=False)


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config("exp2_scratch_cpu", TINY, extra={"name": "r", "out_dir": str(out), "data": {"root": str(data)}})
    assert train(cfg)["status"] == "complete"
    return out / "r"


def test_holdout_split_is_stratified_seeded_and_disjoint(data: Path) -> None:
    index = index_split(data, "train")
    fit, hold, pos = sel.holdout_split(index, 0.2, seed=3)
    assert [s.label for s in hold.samples].count(0) == 2 and len(hold) == 6 and len(fit) == 24
    assert not {s.path for s in fit.samples} & {s.path for s in hold.samples}
    assert sel.holdout_split(index, 0.2, seed=3)[2] == pos != sel.holdout_split(index, 0.2, seed=4)[2]
    assert sel.holdout_split(index, 0.0, seed=3)[1] is None
    assert sel.rule("auto", 0.05) == "best_on_holdout" and sel.rule("auto", 0) == "last"
    with pytest.raises(UserError, match="holdout_frac > 0"):
        sel.rule("holdout", 0)


def test_checkpoint_is_selected_on_the_holdout_not_on_val(run: Path) -> None:
    meta = json.loads((run / "run.json").read_text())
    hist = pd.read_csv(run / "history.csv")
    assert {"holdout_loss", "holdout_acc", "holdout_f1"} <= set(hist) and {"val_acc", "train_acc"} <= set(hist)
    s = meta["selection"]
    assert s["rule"] == "best_on_holdout" and s["split"] == "holdout" and s["metric"] == "holdout_acc"
    assert s["epoch"] == meta["best_epoch"] == int(hist.loc[hist["holdout_acc"].idxmax(), "epoch"])
    assert s["n"] == meta["n_holdout"] == 6 and meta["n_train"] == 24
    held = Predictions.load(run / "holdout")
    ev = Predictions.load(run / "eval")
    assert held.n == 6 and all("/train/" in p for p in held.paths) and all("/val/" in p for p in ev.paths)
    assert held.fingerprint["model"] == ev.fingerprint["model"]  # both scored with the selected checkpoint
    ci = json.loads((run / "eval" / "metrics.json").read_text())["ci"]
    assert set(ci["per_class_recall"]) == {"tench", "English springer", "parachute"}


def test_evaluate_reproduces_the_final_metrics_exactly(run: Path, data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ev"
    assert main(["evaluate", str(run), "--root", str(data), "--out", str(out), "--workers", "1"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text()) == json.loads((run / "eval" / "metrics.json").read_text())
    a, b = Predictions.load(out), Predictions.load(run / "eval")
    assert np.array_equal(a.logits, b.logits) and a.paths == b.paths and a.fingerprint == b.fingerprint
    assert json.loads((out / "run.json").read_text())["kind"] == "evaluate"


def test_evaluate_refuses_other_classes_in_one_line(run: Path, tmp_path: Path, capsys) -> None:
    other = make_dataset(tmp_path / "two", per_class={"val": 2}, bad_files=False)
    shutil.rmtree(other / "val" / TINY_CLASSES[2])
    assert main(["evaluate", str(run / "checkpoints" / "best.pt"), "--root", str(other), "--out",
                 str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset classes differ" in err[0] and TINY_CLASSES[2] in err[0]
    assert main(["evaluate", str(run), "--root", str(other), "--out", str(tmp_path / "x"), "--weights", "X"]) == 2
    assert main(["evaluate", str(tmp_path / "nope.pt"), "--root", str(other), "--out", str(tmp_path / "x")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_select_on_eval_split_only_when_asked(data: Path, tmp_path: Path) -> None:
    cfg = load_config("exp2_scratch_cpu", TINY + ["train.epochs=2", "train.select=eval_split"],
                      extra={"name": "e", "out_dir": str(tmp_path), "data": {"root": str(data)}})
    meta = train(cfg)
    hist = pd.read_csv(tmp_path / "e" / "history.csv")
    assert meta["selection"]["rule"] == "best_on_eval_split" and meta["selection"]["split"] == "val"
    assert meta["best_epoch"] == int(hist.loc[hist["val_acc"].idxmax(), "epoch"])
