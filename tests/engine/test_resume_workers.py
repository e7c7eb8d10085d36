"""Exact resume with worker processes: each sample's augmentation is seeded from (seed, epoch, index),
so a run interrupted mid-epoch and resumed with data.workers=2 ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from imagenette_lab.data.dataset import ImageFolder, index_split
from imagenette_lab.data.seeding import PerSampleSeed, sample_generator, sample_seed, sample_seeds
from imagenette_lab.data.transforms import default_data_cfg, train_transform
from imagenette_lab.engine.checkpoint import load_checkpoint
from imagenette_lab.engine.train import resume_config, train
from tests.engine.test_train import assert_same_training, cfg_for
from tests.helpers import make_dataset

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")

# Strong per-sample randomness (TrivialAugment, random erasing, random-resized-crop, flip) in two workers.
WORKERS = ["model.name=test_resnet", "data.img_size=16", "data.batch_size=4", "data.workers=2",
           "data.augment=trivialaugment", "data.random_erasing=0.5", "train.amp=off", "model.dropout=0.3",
           "data.mixup=0.2", "train.epochs=2", "optim.warmup_epochs=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny", {"train": 5, "val": 2}, bad_files=False)


def test_resume_mid_epoch_with_two_workers_is_exact(data: Path, tmp_path: Path) -> None:
    ref = train(cfg_for(data, tmp_path, "ref", WORKERS))
    assert ref["status"] == "complete"

    def ctrl_c(info):
        if (info["epoch"], info["step"]) == (1, 2):  # two batches into the first epoch
            os.kill(os.getpid(), signal.SIGINT)

    res = train(cfg_for(data, tmp_path, "run", WORKERS), hooks={"on_step_end": ctrl_c})
    assert res["status"] == "interrupted"
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ck["interrupted"] and ck["epoch"] == 0 and ck["step"] == 2
    done = train(resume_config(tmp_path / "run"), resume=tmp_path / "run")
    assert done["status"] == "complete" and done["epochs_run"] == 2
    assert_same_training(tmp_path / "ref", tmp_path / "run")


def test_per_sample_seed_ignores_worker_and_global_state(data: Path) -> None:
    index = index_split(data, "train")
    ds = PerSampleSeed(ImageFolder(index, train_transform(default_data_cfg(16), "trivialaugment")), seed=3)
    ds.set_epoch(2)
    torch.manual_seed(0)
    a = ds[4][0]
    torch.manual_seed(12345)  # a worker's own RNG state does not matter ...
    assert torch.equal(ds[4][0], a)
    # ... the caller's RNG stream is left as it was (dropout/mixup draws do not depend on the data) ...
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    ds[1]
    assert torch.equal(torch.rand(3), expected)
    # ... and another epoch or another index gives other draws.
    ds.set_epoch(3)
    assert not torch.equal(ds[4][0], a)
    assert len({sample_seed(3, 2, 4), sample_seed(3, 2, 5), sample_seed(4, 2, 4), sample_seed(3, 3, 4)}) == 4
    assert ds.index is index and len(ds) == len(index)
    g1, g2 = sample_generator(3, 2, 4), sample_generator(3, 2, 4)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    assert sample_seeds(3, 2, torch.tensor([4, 5])).tolist() == [sample_seed(3, 2, 4), sample_seed(3, 2, 5)]
