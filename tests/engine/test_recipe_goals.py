"""The goals of the built-in CPU recipes, on the real photographs (long: run with `pytest -m slow`).

Measured on a 2-core CPU: exp2_scratch_cpu 0.854 in 52 min; exp3_transfer_cpu head 0.991 vs probe
0.989 in 4.5 min (docs/results.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imagenette_lab.config import load_config
from imagenette_lab.engine.train import train
from tests.helpers import REAL_224, require

pytestmark = pytest.mark.slow


def _run(recipe: str, out: Path, **overrides) -> dict:
    cfg = load_config(recipe, extra={"out_dir": str(out), "data": {"root": str(require(REAL_224))}, **overrides})
    meta = train(cfg)
    assert meta["status"] == "complete" and meta["n_train"] + meta["n_holdout"] == 9469 and meta["n_skipped"] == 0
    return meta


def test_exp2_scratch_cpu_reaches_085(tmp_path: Path) -> None:
    meta = _run("exp2_scratch_cpu", tmp_path)
    assert meta["metrics"]["accuracy"] >= 0.85, meta["metrics"]


def _scratch_baseline_s(out: Path) -> float:
    """exp2_scratch_cpu's wall time on this machine: IMAGENETTE_LAB_EXP2_BASELINE_S if set, else its
    first epoch (training + evaluation, measured here, now) times its epochs. Setup and the final
    evaluation are left out, so the estimate is low: it can only make the goal harder."""
    if os.environ.get("IMAGENETTE_LAB_EXP2_BASELINE_S"):
        return float(os.environ["IMAGENETTE_LAB_EXP2_BASELINE_S"])
    _run("exp2_scratch_cpu", out, train={"epochs": 1})
    first = json.loads((out / "exp2_scratch_cpu" / "history.jsonl").read_text().splitlines()[0])
    return first["seconds"] * load_config("exp2_scratch_cpu").train.epochs


def test_exp2_fast_cpu_reaches_085_in_half_the_time(tmp_path: Path) -> None:
    """exp2_fast_cpu (tensor cache + progressive resizing): >= .85 in at most half of exp2_scratch_cpu's wall
    time on the same machine. On a 2-core Zen 5 EPYC twelve seeds gave 0.852-0.864 in 0.43x-0.49x: both
    margins are small, so one seed can miss (docs/results.md)."""
    baseline_s = _scratch_baseline_s(tmp_path / "baseline")
    meta = _run("exp2_fast_cpu", tmp_path)
    assert meta["metrics"]["accuracy"] >= 0.85, meta["metrics"]
    assert meta["wall_time_s"] <= baseline_s / 2, (meta["wall_time_s"], baseline_s)


def test_exp3_transfer_cpu_head_not_below_probe(tmp_path: Path) -> None:
    meta = _run("exp3_transfer_cpu", tmp_path)
    paired = meta["probe"]["paired"]
    assert paired["n"] == meta["n_val"]
    assert paired["head_accuracy"] >= paired["probe_accuracy"] >= 0.97, paired
