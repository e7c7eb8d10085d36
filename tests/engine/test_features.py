"""Frozen-base feature cache: extraction, storage, per-epoch views, probe, and cached training + resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from imagenette_lab.config import load_config
from imagenette_lab.data.dataset import ImageFolder, index_split
from imagenette_lab.data.transforms import default_data_cfg, eval_transform, train_transform
from imagenette_lab.engine import features as feat
from imagenette_lab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from imagenette_lab.engine.evaluate import make_loader, run_inference
from imagenette_lab.engine.train import resume_config, train
from imagenette_lab.models.factory import create_classifier
from tests.helpers import make_dataset

DC = default_data_cfg(16, crop_pct=1.0)
CACHED = ["model.name=test_resnet", "model.pretrained=false", "data.img_size=16", "data.batch_size=8",
          "data.workers=0", "train.amp=off", "train.epochs=3", "train.cache_views=2",
          "train.finetune_epochs=1", "train.finetune_lr=0.001", "optim.lr=0.01"]


def _extract(model, index, views=2):
    tfs = [eval_transform(DC)] + [train_transform(DC, "baseline", 0.35)] * (views - 1)
    return feat.extract(model, index, tfs, batch_size=8, workers=0, device=torch.device("cpu"),
                        amp="off", channels_last=False, seed=0, desc="t")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def frozen():
    torch.manual_seed(0)
    return create_classifier("test_resnet", 3, freeze_base=True)


def test_extract_views_align_and_repeat(data: Path, frozen) -> None:
    index = index_split(data, "train")
    f = _extract(frozen, index)
    assert f.x.shape == (21, 2, frozen.num_features) and f.x.dtype == feat.STORE_DTYPE
    assert f.n_skipped == 1  # the truncated JPEG, dropped from every view
    bad = [i for i, s in enumerate(index.samples) if s.path.name == "truncated.JPEG"]
    assert bad and bad[0] not in f.indices.tolist()
    assert f.labels.tolist() == [index.samples[i].label for i in f.indices.tolist()]
    # View 0 is exactly the eval-transform features; view 1 is an augmented crop.
    ref = run_inference(frozen, make_loader(ImageFolder(index, eval_transform(DC)), 8, 0), device="cpu",
                        amp="off", channels_last=False, fn=lambda m, x: m.pooled_features(x))
    assert torch.equal(f.x[:, 0], ref.outputs.to(feat.STORE_DTYPE))
    assert not torch.equal(f.x[:, 0], f.x[:, 1])
    again = _extract(frozen, index)
    assert torch.equal(again.x, f.x)  # seeded: same augmented views every run


def test_feature_files_are_checked_against_their_settings(data: Path, frozen, tmp_path: Path, caplog) -> None:
    f = _extract(frozen, index_split(data, "val"), views=1)
    meta = {"model": "test_resnet", "views": 1, "base": feat.weights_fingerprint(frozen.base)}
    path = tmp_path / "features" / "val.pt"
    feat.save_features(path, f, meta)
    back = feat.load_features(path, meta)
    assert back is not None and torch.equal(back.x, f.x) and torch.equal(back.indices, f.indices)
    assert feat.load_features(path, {**meta, "views": 2}) is None
    torch.manual_seed(1)
    other = create_classifier("test_resnet", 3)
    assert feat.weights_fingerprint(other.base) != meta["base"]
    path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        assert feat.load_features(path, meta) is None
    assert "unreadable feature cache" in caplog.text


def test_more_views_reuse_the_stored_ones(data: Path, frozen, tmp_path: Path, monkeypatch) -> None:
    index = index_split(data, "val")
    tfs = [eval_transform(DC)] + [train_transform(DC, "baseline", 0.35)] * 2
    kw = dict(batch_size=8, workers=0, device=torch.device("cpu"), amp="off", channels_last=False, seed=0, desc="t")
    real, calls = feat.extract_view, []

    def counting(model, index, tf, view, **k):
        calls.append(view)
        return real(model, index, tf, view, **k)

    monkeypatch.setattr(feat, "extract_view", counting)
    two = feat.load_or_extract(tmp_path, "val", {"m": 1}, ["baseline"], frozen, index, tfs[:2], **kw)
    three = feat.load_or_extract(tmp_path, "val", {"m": 1}, ["baseline"], frozen, index, tfs, **kw)
    assert calls == [0, 1, 2] and three.x.shape[1] == 3 and torch.equal(three.x[:, :2], two.x)
    # Other augmentation settings invalidate the augmented views, never the eval view.
    feat.load_or_extract(tmp_path, "val", {"m": 1}, ["trivialaugment"], frozen, index, tfs[:2], **kw)
    assert calls == [0, 1, 2, 1]


def test_cached_views_redraw_per_epoch_and_probe() -> None:
    x = torch.randn(40, 3, 8)
    labels = torch.arange(40) % 2
    x[:, :, 0] += labels[:, None] * 6.0  # linearly separable on feature 0
    f = feat.Features(x.half(), labels, torch.arange(40), 0)
    ds = feat.CachedViews(f, seed=0)
    ds.set_epoch(1)
    c1 = ds.choice.clone()
    ds.set_epoch(2)
    assert not torch.equal(c1, ds.choice) and set(ds.choice.tolist()) == {0, 1, 2}
    ds.set_epoch(1)
    assert torch.equal(c1, ds.choice)
    item, label, idx = ds[5]
    assert item.dtype == torch.float32 and torch.equal(item, x[5, c1[5]].half().float()) and idx == 5
    probe, pred = feat.fit_probe(f, f)
    assert probe["val_accuracy"] == 1.0 and probe["n_train"] == 40
    assert pred == {i: i % 2 for i in range(40)}
    paired = feat.head_vs_probe(pred, [3, 5, 99], labels[[3, 5, 0]].numpy(), np.array([0, 1, 0]))
    assert paired["n"] == 2 and paired["head_only_correct"] == 0 and paired["probe_only_correct"] == 1


def test_cached_head_then_finetune_resumes_exactly(data: Path, tmp_path: Path, monkeypatch) -> None:
    def cfg(name):
        return load_config("exp3_transfer_cpu", CACHED,
                           extra={"name": name, "out_dir": str(tmp_path), "data": {"root": str(data)}})

    ref = train(cfg("ref"))
    run_ref = tmp_path / "ref"
    assert ref["status"] == "complete" and ref["epochs_run"] == 4
    stages = [json.loads(line)["stage"] for line in (run_ref / "history.jsonl").read_text().splitlines()]
    assert stages == ["main", "main", "main", "finetune"]
    assert sorted(p.name for p in (run_ref / "features").iterdir()) == ["train_view0.pt", "train_view1.pt", "val_view0.pt"]
    assert 0 <= ref["probe"]["val_accuracy"] <= 1 and ref["feature_seconds"] > 0
    paired = ref["probe"]["paired"]  # best checkpoint vs probe on the same val images
    assert paired["n"] == ref["n_val"] and paired["head_accuracy"] == ref["metrics"]["accuracy"]
    # The checkpoint is the full model (base + head): it rebuilds and classifies images directly.
    model, info = model_from_checkpoint(run_ref / "checkpoints" / "last.pt")
    assert info["stage"] == "finetune" and model(torch.randn(2, 3, 16, 16)).shape == (2, 3)

    # Interrupt in the cached stage, resume without re-extracting, interrupt in the fine-tune stage, finish.
    def stop_at(epoch, step):
        def hook(info):
            if (info["epoch"], info["step"]) == (epoch, step):
                raise KeyboardInterrupt
        return {"on_step_end": hook}

    run = tmp_path / "run"
    assert train(cfg("run"), hooks=stop_at(2, 1))["exit_code"] == 130
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1

    def no_extract(*a, **k):
        raise AssertionError("features should come from <run>/features on resume")

    monkeypatch.setattr(feat, "extract_view", no_extract)
    assert train(resume_config(run), resume=run, hooks=stop_at(4, 2))["exit_code"] == 130
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (ck["stage"], ck["epoch"], ck["step"]) == ("finetune", 3, 2)
    done = train(resume_config(run), resume=run)
    assert done["status"] == "complete"
    assert done["probe"]["val_accuracy"] == ref["probe"]["val_accuracy"]  # kept in the checkpoint
    a, b = load_checkpoint(run_ref / "checkpoints" / "last.pt"), load_checkpoint(run / "checkpoints" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert done["metrics"] == ref["metrics"]


def test_frozen_base_is_untouched_and_cached_val_matches_image_eval(data: Path, tmp_path: Path) -> None:
    over = [c for c in CACHED if not c.startswith("train.finetune_epochs")] + ["train.finetune_epochs=0"]
    cfg = load_config("exp3_transfer_cpu", over,
                      extra={"name": "head", "out_dir": str(tmp_path), "data": {"root": str(data)}})
    res = train(cfg)
    torch.manual_seed(cfg.seed)  # the engine seeds like this before building the model
    fresh = create_classifier("test_resnet", 3, freeze_base=True)
    best = load_checkpoint(tmp_path / "head" / "checkpoints" / "best.pt")
    base = {k[5:]: v for k, v in best["model"].items() if k.startswith("base.")}
    for k, v in fresh.base.state_dict().items():  # weights AND BatchNorm statistics unchanged
        assert torch.equal(base[k], v), k
    assert not torch.equal(best["model"]["head.2.weight"], fresh.state_dict()["head.2.weight"])
    # Validation on cached features during training == the full model on the images afterwards.
    row = next(r for r in best["history"] if r["epoch"] == res["best_epoch"])
    assert res["metrics"]["accuracy"] == pytest.approx(row["val_acc"])
    assert res["metrics"]["macro_f1"] == pytest.approx(row["val_f1"])


def test_train_crop_size_keys_the_augmented_views(data: Path, tmp_path: Path) -> None:
    """With data.eval_size the augmented views are cropped at img_size, which data_cfg does not hold:
    a rerun at another img_size re-extracts them and keeps the eval view."""
    def features_after(img_size: int) -> list[bytes]:
        cfg = load_config("exp3_transfer_cpu", CACHED + ["data.eval_size=24", f"data.img_size={img_size}",
                                                         "train.epochs=1", "train.finetune_epochs=0"],
                          extra={"name": "fixres", "out_dir": str(tmp_path), "data": {"root": str(data)}})
        assert train(cfg, overwrite=True)["status"] == "complete"
        return [(tmp_path / "fixres" / "features" / f"train_view{v}.pt").read_bytes() for v in (0, 1)]

    first, second = features_after(16), features_after(20)
    assert second[0] == first[0] and second[1] != first[1]
