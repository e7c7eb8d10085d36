"""`evaluate MODEL`: an ImageNet-1k model on a split gives the same predictions as zero-shot."""

from __future__ import annotations

import json

import pytest

from imagenette_lab import cli, zeroshot
from imagenette_lab.data.transforms import default_data_cfg
from imagenette_lab.models import factory
from imagenette_lab.predictions import Predictions
from imagenette_lab.stats import compare
from tests.test_zeroshot import ColourNet


@pytest.fixture
def fake_model(monkeypatch):
    for mod in (zeroshot, factory):
        monkeypatch.setattr(mod, "create_imagenet_model", lambda name, weights=None, weights_file=None: ColourNet())
        monkeypatch.setattr(mod, "data_config", lambda m, name, weights: default_data_cfg(32, crop_pct=1.0))


def test_evaluate_model_name_matches_zero_shot(fake_model, clean_dataset, tmp_path, capsys) -> None:
    common = ["--root", str(clean_dataset), "--workers", "0", "--amp", "off"]
    assert cli.main(["zero-shot", "--out", str(tmp_path / "zs")] + common) == 0
    assert cli.main(["evaluate", "fake", "--out", str(tmp_path / "ev")] + common) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    m1000 = json.loads((tmp_path / "ev" / "imagenet1000" / "metrics.json").read_text())
    assert m["accuracy"] == 1.0 and m1000["accuracy"] == pytest.approx(2 / 3) and m1000["other_predictions"] == 3
    ev, zs = Predictions.load(tmp_path / "ev"), Predictions.load(tmp_path / "zs" / "restricted")
    assert ev.logits.tolist() == zs.logits.tolist() and ev.paths == zs.paths
    full = Predictions.load(tmp_path / "zs" / "imagenet1000")
    assert full.logits.shape[1] == 1000 and full.columns.tolist() == [0, 217, 701]
    r = compare(ev, full, names=("restricted", "1000-way"))
    assert r["table"] == [[6, 3], [0, 0]] and r["mcnemar_exact_p"] == pytest.approx(0.25)
    run = json.loads((tmp_path / "ev" / "run.json").read_text())
    assert run["kind"] == "evaluate" and run["metrics"]["ci"]["accuracy"] == [1.0, 1.0]
