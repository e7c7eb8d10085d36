"""Grad-CAM: heat lands where the decision is made, target layers, figures, the `explain` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from imagenette_lab import explain as ex
from imagenette_lab.cli import main
from imagenette_lab.errors import UserError
from imagenette_lab.models.factory import create_classifier
from imagenette_lab.predict import Predictor

SIZE = 32
DATA_CFG = {"input_size": (3, SIZE, SIZE), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
            "crop_pct": 1.0, "interpolation": "bilinear"}


def quadrant_net() -> nn.Module:
    """Class 0 = "red patch", class 1 = "green patch": channel k of the last conv responds to colour k only.

    The test images carry their coloured patch in the top-right quadrant and grey noise elsewhere, so
    the decision depends on that quadrant alone.
    """
    conv = nn.Conv2d(3, 2, 3, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, :, 1, 1] = torch.tensor([2.0, -2.0, 0.0])  # red minus green
        conv.weight[1, :, 1, 1] = torch.tensor([-2.0, 2.0, 0.0])  # green minus red
        conv.bias.fill_(-0.2)
    fc = nn.Linear(2, 2)
    with torch.no_grad():
        fc.weight.copy_(torch.eye(2) * 10)
        fc.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()


def patch_image(colour: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.clip(0.5 + rng.normal(0, 0.05, (SIZE, SIZE, 3)), 0, 1)
    img[4:12, 20:28] = [1.0, 0.0, 0.0] if colour == 0 else [0.0, 1.0, 0.0]  # inside the top-right quadrant
    return img


def save(img: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def test_gradcam_heat_is_in_the_deciding_quadrant():
    model = quadrant_net()
    x = torch.stack([torch.from_numpy(patch_image(c, s)).permute(2, 0, 1).float() for c, s in ((0, 1), (1, 2))])
    assert model(x).argmax(1).tolist() == [0, 1]
    name, layer, reshape = ex.find_target_layer(model, size=SIZE)
    assert name == "1" and reshape is None  # the ReLU after the conv: the last spatial map before pooling
    cams = ex.gradcam(model, x, [0, 1], layer)
    assert cams.shape == (2, SIZE, SIZE)
    # No parameter gradients touched (a model in training / under DDP), requires_grad restored.
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    h = SIZE // 2
    for cam in cams:
        quadrants = [cam[:h, :h].sum(), cam[:h, h:].sum(), cam[h:, :h].sum(), cam[h:, h:].sum()]
        assert quadrants[1] / sum(quadrants) > 0.8, quadrants  # top-right, not its transpose (bottom-left)


@pytest.mark.parametrize("name, expected", [("resnet18", "base.layer4"), ("efficientnet_b0", "base.features"),
                                            ("test_resnet", "base.")])
def test_target_layer_is_found_for_torchvision_and_timm(name, expected):
    clf = create_classifier(name, 3).eval()
    layer, _, reshape = ex.find_target_layer(clf, size=64)
    assert layer.startswith(expected) and reshape is None
    maps = clf.forward_features(torch.zeros(1, 3, 64, 64))
    assert maps.ndim == 4 and maps.shape[-1] > 1  # forward_features is spatial, like timm's
    # Overridable, with or without the Classifier's "base." prefix; a wrong name lists real ones.
    assert ex.find_target_layer(clf, layer.removeprefix("base."), size=64)[0] == layer
    with pytest.raises(UserError, match="no layer named 'nope'.*" + layer.replace(".", r"\.")):
        ex.find_target_layer(clf, "nope", size=64)


def test_vit_uses_the_token_reshape_and_other_models_skip_with_one_line():
    vit = create_classifier("test_vit", 3).eval()
    size = vit.base.patch_embed.img_size[0]
    name, layer, reshape = ex.find_target_layer(vit, size=size)
    assert name.endswith("norm1") and reshape is not None
    cams = ex.gradcam(vit, torch.randn(1, 3, size, size), [1], layer, reshape)
    assert cams.shape == (1, size, size)
    from torchvision.models.vision_transformer import VisionTransformer

    tv_vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32).eval()
    name, layer, reshape = ex.find_target_layer(tv_vit, size=32)  # not its 4-D patchify conv
    assert name == "encoder.layers.encoder_layer_1.ln_1" and reshape is not None
    assert ex.gradcam(tv_vit, torch.randn(2, 3, 32, 32), [0, 3], layer, reshape).shape == (2, 32, 32)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(UserError, match="no convolutional feature map"):
        ex.find_target_layer(mlp, size=8)
    assert ex.try_save_explanations(mlp, {**DATA_CFG, "input_size": (3, 8, 8)}, [], np.zeros(0), np.zeros((0, 2)),
                                    ["a", "b"], "unused") is None


def test_eval_figures_show_a_seeded_sample_and_only_mistakes(tmp_path: Path):
    paths, y = [], []
    for i in range(6):
        c = i % 2
        paths.append(str(save(patch_image(c, 10 + i), tmp_path / "val" / f"{i}.png")))
        y.append(c)
    y = np.array(y)
    probs = np.tile([[0.8, 0.2]], (6, 1))  # predicts class 0 everywhere: the three class-1 images are mistakes
    probs[5] = [0.6, 0.4]
    out = ex.save_explanations(quadrant_net(), DATA_CFG, paths, y, probs, ["red", "green"], tmp_path / "eval",
                               per_class=2, top_n=8, seed=0, title="t")
    assert out == {"target_layer": "1", "n_grid": 4, "n_mistakes": 3}
    for f in ("gradcam_grid.png", "top_losses_cam.png"):
        assert (tmp_path / "eval" / f).read_bytes()[:4] == b"\x89PNG"
    assert ex.sample_per_class(y, 2, 2, seed=0) == ex.sample_per_class(y, 2, 2, seed=0)


def test_explain_command_overlays_named_class_and_skips_bad_files(tmp_path: Path, monkeypatch, capsys):
    imgs = tmp_path / "imgs"
    save(patch_image(0, 1), imgs / "red.png")
    save(patch_image(1, 2), imgs / "green.png")
    (imgs / "broken.jpg").write_bytes(b"not an image")
    predictor = Predictor(quadrant_net(), ["red patch", "green patch"], DATA_CFG, "quadrant net")
    monkeypatch.setattr("imagenette_lab.predict.load_predictor", lambda *a, **k: predictor)
    assert main(["explain", "quadrant", str(imgs), "--out", str(tmp_path / "out"), "--class", "Green Patch"]) == 0
    captured = capsys.readouterr()
    assert "skipping" in captured.err and "broken.jpg" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["001_green.png", "002_red.png"]
    assert "heatmap of green patch" in captured.out
    assert main(["explain", "quadrant", str(imgs), "--out", str(tmp_path / "o2"), "--class", "blue"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["imagenette-lab explain: error: unknown class 'blue'; valid classes: red patch, green patch"]


def test_zero_shot_writes_holdout_calibration_and_explanations(clean_dataset: Path, tmp_path: Path, monkeypatch):
    from imagenette_lab import zeroshot
    from imagenette_lab.data.transforms import default_data_cfg

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 1000))
    monkeypatch.setattr(zeroshot, "create_imagenet_model", lambda *a, **k: net)
    monkeypatch.setattr(zeroshot, "data_config", lambda *a: default_data_cfg(32, crop_pct=1.0))
    out = tmp_path / "zs"
    assert main(["zero-shot", "--root", str(clean_dataset), "--out", str(out), "--workers", "0", "--amp", "off",
                 "--holdout-per-class", "4"]) == 0
    with np.load(out / "holdout" / "predictions.npz") as d:  # 4 seeded *train* images per class, 3-way logits
        assert d["logits"].shape == (12, 3) and all("/train/" in p for p in d["paths"])
    cal = json.loads((out / "restricted" / "calibration.json").read_text())
    assert cal["temperature"] > 0 and "12 held-out train images" in cal["fitted_on"] and cal["n"] == 9
    assert json.loads((out / "restricted" / "metrics.json").read_text())["calibration"]["ece"] == cal["ece"]
    for f in ("reliability.png", "gradcam_grid.png", "top_losses_cam.png"):
        assert (out / "restricted" / f).is_file(), f
    assert main(["zero-shot", "--root", str(clean_dataset), "--out", str(tmp_path / "z2"), "--workers", "0",
                 "--amp", "off", "--no-explain", "--holdout-per-class", "0"]) == 0
    assert not (tmp_path / "z2" / "restricted" / "gradcam_grid.png").exists()
    assert not (tmp_path / "z2" / "holdout").exists()
    assert json.loads((tmp_path / "z2" / "restricted" / "calibration.json").read_text())["temperature"] is None


def test_train_final_eval_writes_calibration_and_gradcam(clean_dataset: Path, tmp_path: Path):
    from imagenette_lab.config import load_config
    from imagenette_lab.engine.train import train

    sets = ["model.name=test_resnet", "data.img_size=32", "data.batch_size=8", "data.workers=0", "train.amp=off",
            "train.epochs=1", "model.freeze_base=true", "train.feature_cache=true"]  # Exp 3's path
    cfg = load_config(None, sets + [f"data.root={clean_dataset}", f"out_dir={tmp_path}", "name=t"])
    assert train(cfg)["status"] == "complete"
    ev = tmp_path / "t" / "eval"
    for f in ("calibration.json", "reliability.png", "gradcam_grid.png", "top_losses_cam.png"):
        assert (ev / f).is_file(), f
    cal = json.loads((ev / "calibration.json").read_text())
    # data.holdout_frac's slice of train, scored by the train run into <run>/holdout/, fits the temperature.
    assert (tmp_path / "t" / "holdout" / "predictions.npz").is_file()
    assert 0.01 <= cal["temperature"] <= 100 and "holdout" in cal["fitted_on"] and cal["n_holdout"] > 0
