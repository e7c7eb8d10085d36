"""train.freeze_modules + train.freeze_last_epochs: early modules stop training in the last epochs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from imagenette_lab.engine.checkpoint import load_checkpoint
from imagenette_lab.engine.train import resume_config, train
from imagenette_lab.errors import UserError
from imagenette_lab.report.describe import settings_items
from imagenette_lab.runrecord import read_run
from tests.engine.test_train import EXACT, assert_same_training, cfg_for
from tests.helpers import make_dataset

FREEZE = EXACT + ["train.freeze_modules=[base.conv1,base.bn1]", "train.freeze_last_epochs=1",
                  "train.checkpoints_keep=all"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny", {"train": 12, "val": 6}, size=40)


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    assert train(cfg_for(data, out, "ref", FREEZE))["status"] == "complete"
    return out / "ref"


def _state(run: Path, epoch: int) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / f"epoch_{epoch:03d}.pt")["model"]


def test_named_modules_stop_training_in_the_last_epochs(reference: Path) -> None:
    e1, e2, e3 = (_state(reference, e) for e in (1, 2, 3))
    frozen = [k for k in e1 if k.startswith(("base.conv1.", "base.bn1."))]
    weights = [k for k in frozen if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert weights and all(torch.equal(e2[k], e3[k]) for k in weights)  # epoch 3 (the last) froze them
    assert all(not torch.equal(e1[k], e2[k]) for k in weights)  # epoch 2 still trained them
    # Their BatchNorm still updates its running statistics; everything else still trains.
    assert not torch.equal(e2["base.bn1.running_mean"], e3["base.bn1.running_mean"])
    assert not torch.equal(e2["base.layer1.0.conv1.weight"], e3["base.layer1.0.conv1.weight"])
    # run.json and the report's settings line say so.
    rec = read_run(reference)
    assert rec.settings.frozen_late == {"modules": ["base.conv1", "base.bn1"], "epochs": 1}
    assert "base.conv1, base.bn1 frozen for the last epoch" in settings_items(rec)


def test_resume_inside_the_frozen_epochs_is_exact(data: Path, reference: Path, tmp_path: Path) -> None:
    def term(row):
        if row["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    run = tmp_path / "ref"
    assert train(cfg_for(data, tmp_path, "ref", FREEZE), hooks={"on_epoch_end": term})["exit_code"] == 143
    assert train(resume_config(run), resume=run)["status"] == "complete"
    assert_same_training(reference, run)


@pytest.mark.parametrize("extra, msg", [
    (["train.freeze_modules=[base.nope]", "train.freeze_last_epochs=1"], "no module 'base.nope'"),
    (["train.freeze_modules=[base.conv1]"], "go together"),
    (["train.freeze_last_epochs=1"], "go together"),
    (["train.freeze_modules=[base.conv1]", "train.freeze_last_epochs=3"], "fewer than train.epochs"),
    (["train.freeze_modules=[base.conv1]", "train.freeze_last_epochs=1", "model.freeze_base=true"],
     "model.freeze_base"),
    (["train.freeze_modules=[base.conv1]", "train.freeze_last_epochs=1", "train.finetune_epochs=1"],
     "train.finetune_epochs"),
])
def test_refused_settings(data: Path, tmp_path: Path, extra: list[str], msg: str) -> None:
    with pytest.raises(UserError, match=msg):
        train(cfg_for(data, tmp_path, "bad", EXACT + extra))
