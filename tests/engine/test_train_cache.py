"""Training from the uint8 tensor cache (data.cache) with progressive resizing: same learning, exact resume."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from imagenette_lab.engine.fast import progressive_size
from imagenette_lab.engine.train import resume_config, train
from tests.engine.test_train import TINY, assert_same_training, cfg_for
from tests.helpers import make_dataset

CACHED = ["data.cache=true", "data.progressive_min_size=16", "data.progressive_frac=0.5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # 20 train / 10 val images per class: enough that val accuracy is not a coin toss.
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny", {"train": 20, "val": 10}, size=40)


def test_progressive_schedule() -> None:
    sizes = [progressive_size(128, 96, 0.5, e, 10) for e in range(1, 11)]
    assert sizes == [96, 96, 96, 112, 112, 128, 128, 128, 128, 128]
    assert progressive_size(128, 0, 0.5, 1, 10) == 128


def test_same_accuracy_with_and_without_the_cache(data: Path, tmp_path: Path) -> None:
    base = TINY + ["data.img_size=24", "train.epochs=4", "optim.lr=0.003"]
    plain = train(cfg_for(data, tmp_path, "plain", base))
    cached = train(cfg_for(data, tmp_path, "cached", base + ["data.cache=true"]))
    a, b = plain["metrics"]["accuracy"], cached["metrics"]["accuracy"]
    assert a >= 0.8 and b >= 0.8 and abs(a - b) <= 0.15, (a, b)  # 30 val images: 0.15 = 4-5 images
    # The undecodable/odd files of the tiny set are reported the same way by both sources.
    assert cached["skipped"] == plain["skipped"] and cached["n_skipped"] == 3 and cached["n_train"] == 64
    assert (data / ".imagenette_lab" / "tensors-train-27px-short-crop-bilinear.json").is_file()


def test_eval_size_above_the_train_size(data: Path, tmp_path: Path, monkeypatch) -> None:
    """data.eval_size: crops train at img_size, eval, the checkpoint's data_cfg and the cache use eval_size."""
    import imagenette_lab.engine.train as engine_train
    from imagenette_lab.engine.checkpoint import load_checkpoint
    from imagenette_lab.report.describe import settings_items
    from imagenette_lab.runrecord import read_run

    trained: list[int] = []
    real = engine_train.train_transform
    monkeypatch.setattr(engine_train, "train_transform",
                        lambda dc, *a: trained.append(dc["input_size"][-1]) or real(dc, *a))
    extra = TINY + CACHED + ["data.img_size=24", "data.eval_size=32", "train.epochs=2"]
    assert train(cfg_for(data, tmp_path, "fixres", extra))["status"] == "complete"
    assert set(trained) == {16, 24} and trained[-1] == 24  # progressive: 16 px, then img_size; never 32
    ckpt = load_checkpoint(tmp_path / "fixres" / "checkpoints" / "last.pt")
    assert ckpt["data_cfg"]["input_size"] == (3, 32, 32)  # what evaluate/predict/export infer at
    assert (data / ".imagenette_lab" / "tensors-val-36px-short-crop-bilinear.json").is_file()  # 32 / 0.875
    assert "trained at 24 px, evaluated at 32 px" in settings_items(read_run(tmp_path / "fixres"))


def test_flip_tta_follows_the_run(data: Path, tmp_path: Path) -> None:
    """data.tta=flip: every evaluation of the run, and evaluate/predict of its checkpoint, use it."""
    import imagenette_lab.api as lab
    from imagenette_lab.predictions import Predictions
    from imagenette_lab.report.describe import settings_items
    from imagenette_lab.runrecord import read_run

    extra = TINY + CACHED + ["data.img_size=24", "train.epochs=2", "data.tta=flip", "train.eval_every=2"]
    res = train(cfg_for(data, tmp_path, "tta", extra))
    run = tmp_path / "tta"
    hist = [json.loads(r) for r in (run / "history.jsonl").read_text().splitlines()]
    assert hist[0]["val_acc"] is None and hist[1]["val_acc"] == res["metrics"]["accuracy"]
    reported = Predictions.load(run / "eval" / "predictions.npz")
    assert reported.meta["tta"] == "flip" and "24 px with flip TTA" in settings_items(read_run(run))
    same = lab.evaluate(run, data, tmp_path / "again", workers=0)
    assert same.metrics.accuracy == res["metrics"]["accuracy"]
    again = Predictions.load(tmp_path / "again" / "predictions.npz")
    assert (again.logits == reported.logits).all()
    lab.evaluate(run, data, tmp_path / "plain", workers=0, tta="none")
    plain = Predictions.load(tmp_path / "plain" / "predictions.npz")
    assert plain.meta["tta"] == "none" and not (plain.logits == reported.logits).all()


def test_cached_progressive_run_resumes_exactly(data: Path, tmp_path: Path) -> None:
    extra = TINY + CACHED + ["data.img_size=32", "train.epochs=3", "data.workers=1"]
    ref = train(cfg_for(data, tmp_path, "ref", extra))
    hist = [json.loads(r) for r in (tmp_path / "ref" / "history.jsonl").read_text().splitlines()]
    assert ref["status"] == "complete" and len(hist) == 3

    def term_after_first(row):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    res = train(cfg_for(data, tmp_path, "run", extra), hooks={"on_epoch_end": term_after_first})
    assert res["status"] == "interrupted"
    done = train(resume_config(tmp_path / "run"), resume=tmp_path / "run")
    assert done["status"] == "complete"
    assert_same_training(tmp_path / "ref", tmp_path / "run")


def test_two_processes_train_from_one_cache(tmp_path: Path) -> None:
    """Under torchrun rank 0 builds the cache, the others wait, then both read their shards of it."""
    from tests.distributed.test_ddp import SAME, torchrun

    data = make_dataset(tmp_path / "tiny", {"train": 8, "val": 5}, bad_files=False)
    sets = [a for s in SAME + ["data.batch_size=4", "data.cache=true"] for a in ("--set", s)]
    proc = torchrun("-m", "imagenette_lab", "train", "--config", "exp2_scratch_cpu", "--root", str(data),
                    "--out", str(tmp_path / "runs"), "--name", "ddp", *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hist = [json.loads(r) for r in (tmp_path / "runs" / "ddp" / "history.jsonl").read_text().splitlines()]
    assert [h["train_n"] for h in hist] == [24, 24] and [h["val_n"] for h in hist] == [15, 15]
    assert proc.stderr.count("building the tensor cache") == 2  # train + val, once each (rank 0)
    assert len(list((data / ".imagenette_lab").glob("tensors-*.u8.npy"))) == 2
