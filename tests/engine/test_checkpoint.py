"""Checkpoints (atomic save, safe load, fallback, compatibility, rebuild), RNG state, sampler, optim."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from imagenette_lab.config import OptimConfig
from imagenette_lab.data.transforms import default_data_cfg
from imagenette_lab.engine import distributed as dist
from imagenette_lab.engine.checkpoint import (
    capture_rng, check_compatible, find_resume_checkpoint, load_checkpoint, model_from_checkpoint,
    restore_rng, save_checkpoint,
)
from imagenette_lab.engine.optim import build_optimizer, build_scheduler, param_groups, warmup_cosine
from imagenette_lab.errors import UserError
from imagenette_lab.models.factory import create_classifier
from tests.helpers import TINY_CLASSES

ARCH = {"name": "test_resnet", "num_classes": 3, "head": "study", "dropout": 0.2, "freeze_base": False}


def _state(model: torch.nn.Module, epoch: int = 1) -> dict:
    return {"arch": ARCH, "model": model.state_dict(), "epoch": epoch, "stage": "main", "step": 0,
            "classes": TINY_CLASSES, "class_names": ["tench", "English springer", "parachute"],
            "data_cfg": default_data_cfg(32), "config": {"name": "t"}, "rng": capture_rng(),
            "history": [{"epoch": 1, "val_acc": 0.5, "val_loss": None}], "best": {"value": None}}


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_classifier("test_resnet", 3, head="study")
    with torch.no_grad():  # non-trivial BatchNorm statistics must survive the round trip too
        m.head[0].running_mean.uniform_()
    return m.eval()


def test_round_trip_is_weights_only_and_rebuilds_the_model(tmp_path: Path, model) -> None:
    path = tmp_path / "ck" / "best.pt"
    save_checkpoint(_state(model), path)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code inside
    assert raw["format"] == "imagenette-lab/checkpoint" and raw["epoch"] == 1
    rebuilt, info = model_from_checkpoint(path)
    assert not rebuilt.training and info["classes"] == TINY_CLASSES and info["class_names"][2] == "parachute"
    assert tuple(info["data_cfg"]["input_size"]) == (3, 32, 32) and info["config"] == {"name": "t"}
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt(x), model(x))
    assert not list(tmp_path.glob("ck/.*"))  # no temp files left behind


def test_keep_prev_rotates_and_copies(tmp_path: Path, model) -> None:
    last = tmp_path / "last.pt"
    save_checkpoint(_state(model, 1), last, keep_prev=True)
    assert not (tmp_path / "last.pt.prev").exists()
    save_checkpoint(_state(model, 2), last, keep_prev=True, copies=(tmp_path / "best.pt",))
    assert load_checkpoint(last)["epoch"] == 2 and load_checkpoint(tmp_path / "last.pt.prev")["epoch"] == 1
    assert (tmp_path / "best.pt").read_bytes() == last.read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "foreign", "missing"])
def test_bad_checkpoints_are_one_line_user_errors(tmp_path: Path, model, damage: str) -> None:
    path = tmp_path / "x.pt"
    save_checkpoint(_state(model), path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":
        torch.save({"weights": torch.ones(2)}, path)
    else:
        path.unlink()
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    expected = {"foreign": "not an imagenette-lab", "missing": "does not exist"}.get(damage, "corrupt or truncated")
    assert expected in msg


def test_resume_falls_back_to_prev_with_a_warning(tmp_path: Path, model, caplog) -> None:
    cdir = tmp_path / "run" / "checkpoints"
    save_checkpoint(_state(model, 1), cdir / "last.pt", keep_prev=True)
    save_checkpoint(_state(model, 2), cdir / "last.pt", keep_prev=True)
    assert find_resume_checkpoint(tmp_path / "run")[1]["epoch"] == 2
    (cdir / "last.pt").write_bytes((cdir / "last.pt").read_bytes()[:500])
    with caplog.at_level(logging.WARNING):
        path, ck = find_resume_checkpoint(tmp_path / "run")
    assert path.name == "last.pt.prev" and ck["epoch"] == 1
    assert "corrupt or truncated" in caplog.text and "previous good checkpoint" in caplog.text
    with pytest.raises(UserError, match="has no checkpoint"):
        find_resume_checkpoint(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        find_resume_checkpoint(tmp_path / "nowhere")


def test_compatibility_checks(model) -> None:
    ck = _state(model)
    check_compatible(ck, model_name="test_resnet", head="study", classes=TINY_CLASSES)
    with pytest.raises(UserError, match="holds a test_resnet model.*asks for resnet18"):
        check_compatible(ck, model_name="resnet18", head="study")
    with pytest.raises(UserError, match="head linear"):
        check_compatible(ck, model_name="test_resnet", head="linear")
    with pytest.raises(UserError, match="missing from the dataset: n03888257; not in the checkpoint: n99"):
        check_compatible(ck, classes=TINY_CLASSES[:2] + ["n99"])
    with pytest.raises(UserError, match="different order"):
        check_compatible(ck, classes=TINY_CLASSES[::-1])
    # A state dict of another architecture under the same name cannot be loaded.
    other = create_classifier("test_efficientnet", 3)
    with pytest.raises(UserError, match="does not fit this model architecture"):
        model_from_checkpoint({**ck, "model": other.state_dict()})


def test_rng_capture_restore_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    np.random.normal()  # a cached Gaussian is part of numpy's state
    state = capture_rng()
    path = tmp_path / "rng.pt"
    save_checkpoint({"rng": state}, path)
    first = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    restore_rng(load_checkpoint(path)["rng"])
    again = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2:] == again[2:]


def test_epoch_sampler_is_seeded_resumable_and_shards() -> None:
    s = dist.EpochSampler(10, shuffle=True, seed=3)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(2)
    assert sorted(e1) == list(range(10)) and list(s) != e1
    s.set_epoch(1, skip=4)
    assert list(s) == e1[4:] and len(s) == 6
    # Two ranks split one epoch without overlap, padding to equal length.
    shards = [dist.EpochSampler(9, True, 3, r, 2) for r in (0, 1)]
    for sh in shards:
        sh.set_epoch(1)
    a, b = list(shards[0]), list(shards[1])
    assert len(a) == len(b) == 5 and set(a) | set(b) == set(range(9))
    assert dist.world_size() == 1 and dist.is_main()
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(dist.reduce_sum(t), t) and dist.reduce_sum(t) is not t


def test_param_groups_and_schedules(model) -> None:
    groups = param_groups(model, 0.05)
    assert groups[0]["weight_decay"] == 0.05 and all(p.ndim > 1 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.ndim <= 1 for p in groups[1]["params"])
    frozen = create_classifier("test_resnet", 3, freeze_base=True)
    n_head = sum(p.numel() for p in frozen.head.parameters())
    assert sum(p.numel() for g in param_groups(frozen, 0.1) for p in g["params"]) == n_head
    # Linear warmup to the peak, then cosine to zero.
    lrs = [warmup_cosine(s, 10, 2, True) for s in range(11)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == 1.0 and lrs[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    for name in ("onecycle", "cosine", "constant"):
        for steps in (1, 3, 7):  # short runs must not break OneCycleLR's phase arithmetic
            cfg = OptimConfig(name="sgd", scheduler=name, warmup_epochs=1.0, lr=0.1)
            opt = build_optimizer(model, cfg)
            sched = build_scheduler(opt, cfg, 0.1, 2, steps)
            seen = []
            for _ in range(2 * steps):
                opt.step()
                sched.step()
                seen.append(opt.param_groups[0]["lr"])
            assert max(seen) <= 0.1 + 1e-9
    with pytest.raises(UserError, match="no trainable parameters"):
        param_groups(create_classifier("test_resnet", 3).requires_grad_(False), 0.1)
