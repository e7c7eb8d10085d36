"""`imagenette-lab predict`: top-k classes for images, from an ImageNet model or a train checkpoint."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import imagenette_lab.predict as predict_mod
from imagenette_lab.cli import main
from imagenette_lab.data.transforms import default_data_cfg
from tests.helpers import REAL_224, require

PARACHUTES = ("ILSVRC2012_val_00001440.JPEG", "n03888257_10092.JPEG")  # confidently parachute for lite0
HAS_FACTORY = importlib.util.find_spec("imagenette_lab.models.factory") is not None
needs_factory = pytest.mark.skipif(not HAS_FACTORY, reason="imagenette_lab.models.factory not available yet")


class ColourNet(nn.Module):
    """Logits = mean R, G, B of the (normalised) image: red -> class 0, green -> 1, blue -> 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * 10


@pytest.fixture
def fake_predictor(monkeypatch) -> predict_mod.Predictor:
    pred = predict_mod.Predictor(ColourNet(), ["red", "green", "blue"], default_data_cfg(32, crop_pct=1.0), "fake")
    monkeypatch.setattr(predict_mod, "load_predictor", lambda *a, **k: pred)
    return pred


def _img(path: Path, colour: tuple[int, int, int], size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path, "JPEG")
    return path


def _mixed_dir(root: Path, good: bool = True) -> Path:
    d = root / "mixed"
    d.mkdir(parents=True)
    (d / "notes.txt").write_text("not an image")
    _img(d / "big.jpg", (0, 0, 255), size=256)
    data = (d / "big.jpg").read_bytes()
    (d / "corrupt.jpg").write_bytes(data[: len(data) // 2])  # valid header, truncated body
    (d / "big.jpg").unlink()
    (d / "empty.jpg").write_bytes(b"")
    if good:
        _img(d / "sub" / "red.jpg", (230, 10, 10))
        _img(d / "green.png", (10, 230, 10))
    return d


def test_mixed_dir_skips_bad_files_with_message(tmp_path: Path, fake_predictor, capsys) -> None:
    d = _mixed_dir(tmp_path)
    assert main(["predict", "fake", str(d), "--top-k", "2"]) == 0
    cap = capsys.readouterr()
    assert "notes.txt (not an image)" in cap.err
    assert f"skipping {d / 'corrupt.jpg'}" in cap.err and f"skipping {d / 'empty.jpg'}" in cap.err
    assert "2 image(s) classified, 3 file(s) skipped" in cap.err
    lines = cap.out.splitlines()
    assert lines[0] == str(d / "green.png") and "green" in lines[1] and lines[1].strip().startswith("1.")
    assert lines[3] == str(d / "sub" / "red.jpg") and lines[4].endswith("red")
    assert len(lines) == 6  # 2 images x (path + 2 predictions)


def test_json_output(tmp_path: Path, fake_predictor, capsys) -> None:
    d = _mixed_dir(tmp_path)
    blue = _img(tmp_path / "blue.jpg", (10, 10, 230))
    assert main(["predict", "fake", str(blue), str(d), "--json", "--top-k", "5", "--batch-size", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in out] == [str(blue), str(d / "green.png"), str(d / "sub" / "red.jpg")]
    assert [r["predictions"][0]["class"] for r in out] == ["blue", "green", "red"]
    for r in out:
        preds = r["predictions"]
        assert len(preds) == 3  # top-k capped at the number of classes
        assert set(preds[0]) == {"class", "probability"}
        probs = [p["probability"] for p in preds]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)


def test_nothing_readable_is_an_error(tmp_path: Path, fake_predictor, capsys) -> None:
    d = _mixed_dir(tmp_path, good=False)
    assert main(["predict", "fake", str(d)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "imagenette-lab predict: error: none of the 3 file(s) could be read as an image")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert main(["predict", "fake", str(empty)]) == 1
    assert "no files to classify" in capsys.readouterr().err


def test_argument_errors(tmp_path: Path, fake_predictor, capsys) -> None:
    img = _img(tmp_path / "a.jpg", (200, 0, 0))
    assert main(["predict", "fake", str(tmp_path / "missing.jpg")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["predict", "fake", str(img), "--top-k", "0"]) == 2
    assert main(["predict", "fake", str(img), "--batch-size", "0"]) == 2


def test_missing_checkpoint_and_weights_with_checkpoint(tmp_path: Path, capsys) -> None:
    img = _img(tmp_path / "a.jpg", (200, 0, 0))
    assert main(["predict", str(tmp_path / "nope.pt"), str(img)]) == 1
    assert "checkpoint" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert main(["predict", str(run_dir), str(img)]) == 1
    assert "without a checkpoint" in capsys.readouterr().err
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"whatever")
    assert main(["predict", str(ckpt), str(img), "--weights", "DEFAULT"]) == 2


@needs_factory
def test_real_parachutes_with_lite0(capsys) -> None:
    val = require(REAL_224 / "val" / "n03888257")
    paths = [require(val / name) for name in PARACHUTES]
    assert main(["predict", "efficientnet_lite0", *map(str, paths), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in out] == [str(p) for p in paths]
    for r in out:
        assert r["predictions"][0]["class"] == "parachute", r
        assert len(r["predictions"]) == 3


@needs_factory
def test_real_dir_with_bad_files_table_output(tmp_path: Path, capsys) -> None:
    src = require(REAL_224 / "val" / "n03888257" / PARACHUTES[1])
    d = _mixed_dir(tmp_path, good=False)
    shutil.copy(src, d / "chute.JPEG")
    assert main(["predict", "efficientnet_lite0", str(d), "--top-k", "1"]) == 0
    cap = capsys.readouterr()
    assert cap.out.splitlines() == [str(d / "chute.JPEG"), cap.out.splitlines()[1]]
    assert cap.out.splitlines()[1].endswith("%  parachute")
    assert "1 image(s) classified, 3 file(s) skipped" in cap.err


@pytest.mark.skipif(
    not (HAS_FACTORY and importlib.util.find_spec("imagenette_lab.engine.checkpoint")),
    reason="needs engine/checkpoint.py and models/factory.py (create_classifier) to build a checkpoint",
)
def test_checkpoint_predict(tmp_path: Path, capsys) -> None:
    from imagenette_lab.engine.checkpoint import save_checkpoint
    from imagenette_lab.models.factory import create_classifier

    arch = {"name": "efficientnet_b0", "num_classes": 3, "head": "linear", "dropout": 0.0}
    model = create_classifier(arch["name"], 3, pretrained=False, freeze_base=False,
                              head=arch["head"], dropout=arch["dropout"])
    state = {
        "arch": arch,
        "model": model.state_dict(),
        "classes": ["n01440764", "n02102040", "n03888257"],
        "class_names": ["tench", "English springer", "parachute"],
        "data_cfg": default_data_cfg(64),
        "config": {"name": "tiny"},
        "epoch": 1,
    }
    run_dir = tmp_path / "run"
    save_checkpoint(state, run_dir / "checkpoints" / "best.pt")
    img = _img(tmp_path / "a.jpg", (200, 30, 30), size=80)
    for spec in (run_dir / "checkpoints" / "best.pt", run_dir):  # file, or the run directory
        assert main(["predict", str(spec), str(img), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert len(out) == 1
        preds = out[0]["predictions"]
        assert sorted(p["class"] for p in preds) == ["English springer", "parachute", "tench"]
        assert sum(p["probability"] for p in preds) == pytest.approx(1.0, abs=1e-5)
