"""Calibration: ECE/MCE against hand-computed values, temperature scaling, files from saved logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imagenette_lab import calibration as cal
from imagenette_lab.cli import main
from imagenette_lab.errors import UserError

CONTRACT_KEYS = {"ece", "mce", "ece_after", "mce_after", "temperature", "nll_before", "nll_after",
                 "n_bins", "fitted_on"}


def two_class_logits(p_class0: np.ndarray) -> np.ndarray:
    p = np.asarray(p_class0, dtype=np.float64)
    return np.log(np.stack([p, 1 - p], axis=1))


def draw(n: int, scale: float, seed: int, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a calibrated model (labels drawn from its own softmax), multiplied by `scale`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, size=(n, classes))
    p = cal.softmax(z)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return z * scale, y


def write_npz(folder: Path, logits: np.ndarray, targets: np.ndarray) -> Path:
    """The evaluation-bundle contract of COORDINATION.md (i11's Predictions writes the same keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(targets)
    np.savez(folder / "predictions.npz", logits=logits.astype(np.float32), targets=targets.astype(np.int64),
             indices=np.arange(n, dtype=np.int64), paths=np.array([f"img{i}.jpg" for i in range(n)]),
             class_names=np.array([f"c{i}" for i in range(logits.shape[1])]))
    return folder


def test_perfectly_calibrated_predictor_has_ece_near_zero():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 200_000)  # class 0 with probability conf, and it is right that often
    y = (rng.random(conf.size) >= conf).astype(int)
    out = cal.calibrate(two_class_logits(conf), y)
    assert out["ece"] < 0.005
    assert out["temperature"] is None and out["ece_after"] is None


def test_overconfident_predictor_matches_hand_computed_ece_and_mce():
    # 100 predictions at confidence 0.9 of which 60 right (gap 0.30), 100 at 0.55 of which 50 right (gap 0.05):
    # ECE = (100 * 0.30 + 100 * 0.05) / 200 = 0.175, MCE = 0.30.
    conf = np.r_[np.full(100, 0.9), np.full(100, 0.55)]
    y = np.r_[np.zeros(60), np.ones(40), np.zeros(50), np.ones(50)].astype(int)
    ece, mce = cal.ece_mce(np.exp(two_class_logits(conf)), y)
    assert ece == pytest.approx(0.175, abs=1e-9)
    assert mce == pytest.approx(0.30, abs=1e-9)
    bins = cal.reliability_bins(conf, y == 0)
    assert sum(bins["count"]) == 200 and bins["count"][13] == 100 and bins["count"][8] == 100


def test_bin_edges_are_right_closed_and_zero_goes_to_the_first_bin():
    bins = cal.reliability_bins(np.array([0.0, 1 / 15, 1 / 15 + 1e-9, 1.0]), np.array([1, 1, 0, 1]), 15)
    assert bins["count"][0] == 2 and bins["count"][1] == 1 and bins["count"][14] == 1


def test_temperature_scaling_lowers_nll_and_keeps_accuracy():
    holdout = draw(3000, 3.0, seed=1)
    logits, y = draw(3000, 3.0, seed=2)
    out = cal.calibrate(logits, y, holdout=holdout, fitted_on="synthetic")
    assert 2.5 < out["temperature"] < 3.5  # the over-confidence factor is recovered
    assert out["nll_after"] < out["nll_before"] - 0.1
    assert out["ece_after"] < out["ece"]
    assert out["accuracy_after"] == out["accuracy"]
    assert out["fitted_on"] == "synthetic" and CONTRACT_KEYS <= out.keys()


def test_calibrate_eval_dir_writes_json_and_diagram_from_saved_logits(tmp_path: Path):
    ev = write_npz(tmp_path / "run" / "eval", *draw(500, 2.5, seed=3))
    ho = write_npz(tmp_path / "run" / "holdout", *draw(400, 2.5, seed=4))
    out = cal.calibrate_eval_dir(ev, ho)
    saved = json.loads((ev / "calibration.json").read_text())
    assert CONTRACT_KEYS <= saved.keys() and saved["n_bins"] == 15
    assert saved["temperature"] == pytest.approx(out["temperature"]) and saved["temperature"] > 1.5
    assert str(ho) in saved["fitted_on"] and "400" in saved["fitted_on"]
    png = (ev / "reliability.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # The CLI finds eval/ and holdout/ in the run directory.
    (ev / "calibration.json").unlink()
    assert main(["calibrate", str(tmp_path / "run")]) == 0
    assert (ev / "calibration.json").is_file()


def test_old_run_without_logits_gets_ece_from_predictions_csv(tmp_path: Path):
    ev = tmp_path / "eval"
    ev.mkdir()
    conf = np.r_[np.full(10, 0.9), np.full(10, 0.55)]
    correct = np.r_[np.ones(6), np.zeros(4), np.ones(5), np.zeros(5)].astype(bool)
    pd.DataFrame({"path": "x", "confidence": conf, "correct": correct}).to_csv(ev / "predictions.csv", index=False)
    out = cal.calibrate_eval_dir(ev, None)
    assert out["ece"] == pytest.approx(0.175) and out["temperature"] is None and "older run" in out["note"]


def test_bad_inputs_are_one_line_errors(tmp_path: Path, capsys):
    with pytest.raises(UserError, match="neither"):
        cal.calibrate_eval_dir(tmp_path, None)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "predictions.npz").write_bytes(b"not a zip")
    assert main(["calibrate", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable predictions file" in err[0]


def test_cli_keeps_a_pipeline_calibration_it_cannot_recompute(tmp_path: Path):
    ev = tmp_path / "run" / "eval"
    ev.mkdir(parents=True)
    pd.DataFrame({"path": "x", "confidence": [0.9, 0.8], "correct": [True, False]}).to_csv(ev / "predictions.csv")
    full = {"ece": 0.1, "mce": 0.2, "temperature": 1.5, "ece_after": 0.05}
    (ev / "calibration.json").write_text(json.dumps(full))
    assert cal.calibrate_run(tmp_path / "run")[str(ev)] == full
    assert json.loads((ev / "calibration.json").read_text()) == full


def test_bundle_with_more_outputs_than_classes_is_calibrated_as_that_classifier(tmp_path: Path):
    # Zero-shot's 1000-way view: K = 6 outputs, C = 2 classes living in columns 4 and 1.
    logits = np.log(np.array([[0.05, 0.05, 0.05, 0.05, 0.75, 0.05], [0.1, 0.5, 0.1, 0.1, 0.1, 0.1]]))
    np.savez(tmp_path / "predictions.npz", logits=logits, targets=np.array([0, 0]), indices=np.arange(2),
             paths=np.array(["a", "b"]), class_names=np.array(["x", "y"]), columns=np.array([4, 1]))
    z, y = cal.load_logits(tmp_path)
    assert z.shape == (2, 6) and y.tolist() == [4, 4]
    out = cal.calibrate(z, y)
    assert out["accuracy"] == 0.5 and out["ece"] == pytest.approx((0.25 + 0.5) / 2)


def test_degenerate_holdout_keeps_temperature_bounded_and_says_so():
    wrong = two_class_logits(np.full(5, 0.99)), np.ones(5, dtype=int)  # all wrong, very confident
    out = cal.calibrate(*draw(200, 1.0, seed=5, classes=2), holdout=wrong)
    assert out["temperature"] == pytest.approx(cal.T_BOUNDS[1], rel=0.01) and out["temperature_at_bound"]
    assert "bound" in out["note"]
