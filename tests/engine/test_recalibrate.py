"""train.recalibrate_bn: BatchNorm statistics re-estimated at the eval view after training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from imagenette_lab.data.dataset import index_split
from imagenette_lab.data.transforms import default_data_cfg, eval_transform
from imagenette_lab.engine.checkpoint import load_checkpoint
from imagenette_lab.engine.recalibrate import recalibrate_bn
from imagenette_lab.engine.train import train
from imagenette_lab.errors import UserError
from tests.engine.test_train import TINY, cfg_for
from tests.helpers import make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny", {"train": 12, "val": 6}, size=40)


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.9), nn.Conv2d(4, 4, 3),
                         nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(4))


def test_statistics_are_the_average_over_the_eval_views(data: Path) -> None:
    torch.manual_seed(0)
    net = _net().train()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "batches" not in k}
    inputs: list[torch.Tensor] = []
    net[1].register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach().clone()))
    net[2].register_forward_hook(lambda m, a, out: assert_unchanged(a[0], out))  # dropout stays off
    index = index_split(data, "train")
    # 9 images in batches of 4: 4 + 4 + a single image, which a BatchNorm1d cannot average over: skipped.
    done = recalibrate_bn(net, index, eval_transform(default_data_cfg(24)), {"source": "folder"}, 9,
                          batch_size=4, workers=0, device=torch.device("cpu"), amp="off", channels_last=False, seed=0)
    assert done["images"] == 8 and done["layers"] == 3 and [len(x) for x in inputs] == [4, 4]
    expected_mean = torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0)
    expected_var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in inputs]).mean(0)
    torch.testing.assert_close(net[1].running_mean, expected_mean)
    torch.testing.assert_close(net[1].running_var, expected_var)
    assert all(m.momentum == 0.1 for m in (net[1], net[4], net[7])) and net.training and net[2].training
    for k, v in net.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k


def assert_unchanged(a: torch.Tensor, out: torch.Tensor) -> None:
    assert torch.equal(a, out)


def test_a_run_reports_and_keeps_the_new_statistics(data: Path, tmp_path: Path) -> None:
    from imagenette_lab.api import evaluate
    from imagenette_lab.report.collect import load_run
    from imagenette_lab.report.describe import settings_items
    from imagenette_lab.report.summary import summarise
    from imagenette_lab.runrecord import read_run

    extra = TINY + ["data.cache=true", "data.img_size=24", "data.eval_size=32", "train.epochs=2",
                    "train.recalibrate_bn=40"]
    res = train(cfg_for(data, tmp_path, "recal", extra))
    run = tmp_path / "recal"
    # 40 drawn, one of them the truncated JPEG, which is skipped as everywhere else
    assert res["recalibrated_bn"]["images"] == 39 and res["recalibrated_bn"]["size"] == 32
    best, last = load_checkpoint(run / "checkpoints" / "best.pt"), load_checkpoint(run / "checkpoints" / "last.pt")
    assert best["recalibrated_bn"] == res["recalibrated_bn"] and "recalibrated_bn" not in last
    changed = [k for k in best["model"] if not torch.equal(best["model"][k], last["model"][k])]
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    # evaluate/predict/export read the reported checkpoint: evaluate scores what run.json reports.
    again = evaluate(run, data, tmp_path / "ev", workers=0)
    assert again.metrics.accuracy == res["metrics"]["accuracy"]
    rec = read_run(run)
    assert "BatchNorm statistics re-estimated on 39 train images at 32 px" in settings_items(rec)
    lines = summarise(load_run(run, "recal", "train"))  # the report's "What this shows"
    assert any("(before the BatchNorm statistics were re-estimated)" in line for line in lines)


@pytest.mark.parametrize("extra, msg", [
    (["train.recalibrate_bn=-1"], "must be >= 0"),
    (["train.recalibrate_bn=100", "model.freeze_base=true"], "frozen base"),
    (["train.recalibrate_bn=100", "train.sync_bn=true"], "sync_bn"),
])
def test_refused_settings(data: Path, tmp_path: Path, extra: list[str], msg: str) -> None:
    with pytest.raises(UserError, match=msg):
        train(cfg_for(data, tmp_path, "bad", TINY + extra))
