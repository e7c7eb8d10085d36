"""torchrun + DDP on this CPU: 2 gloo processes on tiny generated data.

Each torchrun launch costs a few seconds of imports, so the launches are few and each checks a lot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from imagenette_lab.cli import main
from imagenette_lab.config import load_config
from imagenette_lab.engine import distributed as dist
from imagenette_lab.engine.checkpoint import load_checkpoint
from imagenette_lab.engine.train import train
from imagenette_lab.errors import UserError
from tests.helpers import REPO, make_dataset

HERE = Path(__file__).resolve().parent
# No BatchNorm (GroupNorm net, linear head), no dropout, deterministic eval-style crops: the 2-rank run
# must then follow the 1-rank run with the same global batch (2 x 4 = 8) up to float summation order.
SAME = ["model.name=test_efficientnet_gn", "data.img_size=16", "data.workers=0", "train.amp=off",
        "data.augment=none", "model.dropout=0", "train.epochs=2", "data.holdout_frac=0"]
# The stem and first block stop training in epoch 2: the DDP wrapper must be rebuilt (dist.rewrap).
FREEZE = ["train.freeze_modules=[base.conv_stem,base.bn1,base.blocks.0]", "train.freeze_last_epochs=1"]
# No holdout: 24 train images fill whole per-rank batches (the last epoch is reported).
N_TRAIN, N_VAL = 24, 15  # 3 classes x 8 / x 5: the odd val count would expose padding duplicates


def torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ddp") / "tiny", {"train": 8, "val": 5}, bad_files=False)


@pytest.fixture(scope="module")
def ddp_run(data: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("runs")
    sets = [a for s in SAME + FREEZE + ["data.batch_size=4"] for a in ("--set", s)]
    proc = torchrun("-m", "imagenette_lab", "train", "--config", "exp2_scratch_cpu", "--root", str(data),
                    "--out", str(out), "--name", "ddp", *sets)
    return out / "ddp", proc


def test_two_processes_train_like_one(ddp_run, data: Path, tmp_path: Path) -> None:
    run, proc = ddp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed: 2 processes (gloo)" in proc.stderr
    assert "epoch 2: base.conv_stem, base.bn1, base.blocks.0 frozen" in proc.stderr
    assert proc.stdout.count("val accuracy") == 1  # rank 0 alone reports
    hist = pd.read_csv(run / "history.csv")
    assert list(hist["epoch"]) == [1, 2]
    assert (hist["val_n"] == N_VAL).all()  # sharded without padding: each val image once
    assert (hist["train_n"] == N_TRAIN).all()
    assert json.loads((run / "run.json").read_text())["n_val"] == N_VAL
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["world_size"] == 2 and not any(k.startswith("module.") for k in ck["model"])

    cfg = load_config("exp2_scratch_cpu", SAME + FREEZE + ["data.batch_size=8"],
                      extra={"name": "one", "out_dir": str(tmp_path), "data": {"root": str(data)}})
    assert train(cfg)["status"] == "complete"
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    assert hist["train_loss"].iloc[1] < hist["train_loss"].iloc[0]  # it trained: equality is not trivial
    for k, v in one["model"].items():
        if v.is_floating_point():
            # DDP averages two 4-sample means instead of one 8-sample mean: rounding-level differences.
            torch.testing.assert_close(ck["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert torch.equal(torch.tensor(list(hist["train_loss"])).round(decimals=4),
                       torch.tensor(list(pd.read_csv(tmp_path / "one" / "history.csv")["train_loss"])).round(decimals=4))


def test_ddp_checkpoint_resumes_in_one_process(ddp_run, tmp_path: Path, capsys) -> None:
    run, proc = ddp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    hist = pd.read_csv(run / "history.csv")
    assert list(hist["epoch"]) == [1, 2, 3] and hist["val_n"].iloc[-1] == N_VAL
    assert load_checkpoint(run / "checkpoints" / "last.pt")["world_size"] == 1


def test_stop_on_one_rank_mismatched_configs_and_resumes(data: Path, tmp_path: Path) -> None:
    single = load_config("exp2_scratch_cpu", SAME + ["data.batch_size=4"],
                         extra={"name": "single", "out_dir": str(tmp_path), "data": {"root": str(data)}})

    def stop_after_epoch_1(row: dict) -> None:
        raise KeyboardInterrupt

    assert train(single, hooks={"on_epoch_end": stop_after_epoch_1})["status"] == "interrupted"
    proc = torchrun(str(HERE / "worker.py"), "scenarios", str(data), str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for s in seen:  # both ranks refuse the mismatch, both stop on rank 1's SIGTERM
        assert "ranks 1 were started with a config different from rank 0's" in s["mismatch"]
        assert s["stop"] == {"status": "interrupted", "exit_code": 143}
        assert s["ref"] == s["resume"] == s["single"] == "complete"
    ck = load_checkpoint(tmp_path / "interrupted.pt")
    # The interrupted checkpoint: the same step on both ranks, each rank's own sums and RNG.
    assert ck["interrupted"] and ck["step"] == 2 and ck["epoch"] == 0
    assert [b["state"]["step"] for b in ck["rank_boundaries"]] == [2, 2]
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "stop" / "checkpoints" / "last.pt")
    for k in a["model"]:  # resumed under DDP = uninterrupted under DDP, bit for bit
        assert torch.equal(a["model"][k], b["model"][k]), k
    drop = ["seconds", "images_per_s"]
    pd.testing.assert_frame_equal(pd.DataFrame(a["history"]).drop(columns=drop),
                                  pd.DataFrame(b["history"]).drop(columns=drop), check_exact=True)
    one_then_two = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    assert one_then_two["world_size"] == 2 and [r["epoch"] for r in one_then_two["history"]] == [1, 2]
    assert one_then_two["history"][-1]["val_n"] == N_VAL


def test_killed_rank_stops_the_others(data: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = torchrun(str(HERE / "worker.py"), "sigkill", str(data), str(tmp_path), timeout=90)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 60
    assert "SIGKILL" in proc.stderr or "exitcode  : -9" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "rank0.json").exists()  # rank 0 did not go on training alone


def test_more_processes_than_images_is_refused(data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(dist, "world_size", lambda: 64)
    cfg = load_config("exp2_scratch_cpu", SAME, extra={"name": "x", "out_dir": str(tmp_path), "data": {"root": str(data)}})
    with pytest.raises(UserError, match="64 processes but only 24 training images"):
        train(cfg)


def test_unreachable_rendezvous_is_one_line(data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "9", dist.TIMEOUT_ENV: "1"}  # port 9 (discard): nothing listens
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    args = ["train", "--config", "exp2_scratch_cpu", "--root", str(data), "--out", str(tmp_path)]
    assert main(args + [a for s in SAME for a in ("--set", s)]) == 1
    err = capsys.readouterr().err
    assert "could not reach the rendezvous at 127.0.0.1:9" in err and "Traceback" not in err
    assert not dist.is_distributed()
