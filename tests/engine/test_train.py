"""The training engine end to end on tiny data: outputs, exact resume, interrupts, NaN, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from imagenette_lab.cli import main
from imagenette_lab.config import load_config
from imagenette_lab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from imagenette_lab.engine.train import resume_config, train
from tests.helpers import REPO, TINY_CLASSES, make_dataset

# test_resnet: timm's 370k-parameter ResNet, with BatchNorm; amp off because bf16 kernels warm up slowly.
# holdout_frac=0: the last epoch is reported (selection on a holdout: tests/engine/test_selection.py).
TINY = ["model.name=test_resnet", "data.img_size=16", "data.batch_size=8", "data.workers=0",
        "data.augment=baseline", "train.amp=off", "data.holdout_frac=0"]
# Everything random or stateful at once: mixup/cutmix, dropout, accumulation, clipping, warmup.
EXACT = TINY + ["data.mixup=0.2", "data.cutmix=1.0", "optim.grad_accum=2", "optim.grad_clip=1.0",
                "optim.warmup_epochs=1", "model.dropout=0.3", "train.epochs=3"]


def cfg_for(root: Path, out: Path, name: str, extra: list[str] = EXACT, recipe: str = "exp2_scratch_cpu"):
    return load_config(recipe, extra, extra={"name": name, "out_dir": str(out), "data": {"root": str(root)}})


def assert_same_training(a: Path, b: Path) -> None:
    """Bit-identical weights, optimizer state and history (timings aside)."""
    ca, cb = load_checkpoint(a / "checkpoints" / "last.pt"), load_checkpoint(b / "checkpoints" / "last.pt")
    assert ca["model"].keys() == cb["model"].keys()
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    drop = ["seconds", "images_per_s"]
    ha = pd.DataFrame(ca["history"]).drop(columns=drop)
    hb = pd.DataFrame(cb["history"]).drop(columns=drop)
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory) -> Path:
    """One uninterrupted run of EXACT, shared by the resume tests."""
    out = tmp_path_factory.mktemp("ref")
    assert train(cfg_for(data, out, "ref"))["status"] == "complete"
    return out / "ref"


def test_cli_train_outputs_and_learning(data: Path, tmp_path: Path, capsys) -> None:
    args = ["train", "--config", "exp2_scratch_cpu", "--root", str(data), "--out", str(tmp_path),
            "--epochs", "3", "--name", "cli"] + [a for s in TINY for a in ("--set", s)]
    args += ["--set", "data.workers=1"]  # exercise worker processes (and their SIGINT guard)
    assert main(args) == 0
    run = tmp_path / "cli"
    assert "val accuracy" in capsys.readouterr().out
    for f in ("config.yaml", "history.csv", "history.jsonl", "curves.png", "run.json",
              "checkpoints/last.pt", "checkpoints/best.pt", "eval/metrics.json",
              "eval/confusion_matrix.png", "eval/top_losses.png", "eval/classification_report.txt"):
        assert (run / f).is_file(), f
    hist = pd.read_csv(run / "history.csv")
    assert list(hist["epoch"]) == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "lr", "seconds", "images_per_s"} <= set(hist)
    assert len((run / "history.jsonl").read_text().splitlines()) == 3
    # Colour-coded classes are learnable: the tiny net must clearly beat chance (1/3).
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    meta = json.loads((run / "run.json").read_text())
    assert meta["kind"] == "train" and meta["status"] == "complete" and meta["epochs_run"] == 3
    assert meta["metrics"]["accuracy"] > 0.5 and hist["train_acc"].iloc[-1] > 0.8
    assert set(meta["metrics"]) == {"accuracy", "macro_f1", "macro_precision", "macro_recall"}
    assert meta["best_epoch"] == 3 and meta["selection"] == {
        "rule": "last", "split": None, "epoch": 3, "metric": None, "value": None, "n": None}
    reasons = {Path(s["path"]).name: s["reason"] for s in meta["skipped"]}
    assert {"truncated.JPEG", "empty.JPEG", "notes.txt"} == set(reasons) and meta["n_skipped"] == 3
    assert meta["n_train"] == 22 and hist["train_n"].iloc[0] == 21  # the truncated JPEG never trains
    # The best checkpoint rebuilds (as `predict` does) into the model that produced eval/.
    model, info = model_from_checkpoint(run / "checkpoints" / "best.pt")
    assert info["classes"] == TINY_CLASSES and info["class_names"][0] == "tench"
    assert tuple(info["data_cfg"]["input_size"]) == (3, 16, 16)
    ev = json.loads((run / "eval" / "metrics.json").read_text())
    assert ev["accuracy"] == meta["metrics"]["accuracy"]
    # The same name again is refused (no silent overwrite) ...
    assert main(args) == 1
    assert "already holds a run" in capsys.readouterr().err
    # ... unless asked for.
    assert main(args + ["--overwrite", "--epochs", "1", "--set", "data.workers=0"]) == 0
    assert json.loads((run / "run.json").read_text())["epochs_run"] == 1


def test_resume_after_sigterm_at_epoch_end_is_exact(data: Path, reference: Path, tmp_path: Path) -> None:
    def term_after_first(row):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = cfg_for(data, tmp_path, "run")
    res = train(cfg, hooks={"on_epoch_end": term_after_first})
    assert res["status"] == "interrupted" and res["exit_code"] == 143
    run = tmp_path / "run"
    assert not (run / "run.json").exists()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    # The handler is removed after train(): SIGTERM's default action is back.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    done = train(resume_config(run), resume=run)
    assert done["status"] == "complete" and done["epochs_run"] == 3 and done["resumed"]
    assert_same_training(reference, run)
    ref_meta = json.loads((reference / "run.json").read_text())
    assert done["metrics"] == ref_meta["metrics"]


def test_ctrl_c_during_validation_finishes_the_epoch_then_stops(data: Path, reference: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    """A signal after an epoch's last step waits for validation and the checkpoint and history writes
    (a half-written history, or a Ctrl-C inside a first-time import there, would break the handler)."""
    from imagenette_lab.engine.train import Trainer

    real = Trainer.validate

    def validate(self, stage, holdout=False):
        if self.epoch == 0:  # epoch 1's validation
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, stage, holdout)

    monkeypatch.setattr(Trainer, "validate", validate)
    res = train(cfg_for(data, tmp_path, "run"))
    assert res["status"] == "interrupted" and res["exit_code"] == 130
    run = tmp_path / "run"
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["epoch"] == 1 and not ck["interrupted"] and ck["history"][0]["val_acc"] is not None
    assert [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()] == [1]
    monkeypatch.setattr(Trainer, "validate", real)
    assert train(resume_config(run), resume=run)["status"] == "complete"
    assert_same_training(reference, run)


def test_resume_after_ctrl_c_mid_epoch_is_exact(data: Path, reference: Path, tmp_path: Path) -> None:
    seen = []

    def ctrl_c(info):
        seen.append((info["epoch"], info["step"]))
        if (info["epoch"], info["step"]) == (2, 2):  # after the first optimizer step of epoch 2
            os.kill(os.getpid(), signal.SIGINT)

    res = train(cfg_for(data, tmp_path, "run"), hooks={"on_step_end": ctrl_c})
    assert res["status"] == "interrupted" and res["exit_code"] == 130
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ck["interrupted"] and ck["epoch"] == 1 and ck["step"] == 2
    assert seen[-1] == (2, 2)  # stopped at that boundary, nothing after it ran
    # Resume through the CLI, with the run's own config.
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert_same_training(reference, tmp_path / "run")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from imagenette_lab.engine import task  # the loss is computed in the training task

    real = task.loss_fn
    calls = {"n": 0}

    def poisoned(logits, target, ls=0.0):
        calls["n"] += 1
        loss = real(logits, target, ls)
        return loss * float("nan") if calls["n"] > 3 else loss  # 3 batches = epoch 1

    monkeypatch.setattr(task, "loss_fn", poisoned)
    args = ["train", "--config", "exp2_scratch_cpu", "--root", str(data), "--out", str(tmp_path),
            "--name", "nan"] + [a for s in TINY for a in ("--set", s)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "loss is nan at epoch 2" in err and "last good checkpoint" in err and "optim.lr" in err
    ck = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not (tmp_path / "nan" / "run.json").exists()


def test_bad_input_one_line_errors(data: Path, reference: Path, tmp_path: Path, capsys) -> None:
    base = ["train", "--root", str(data), "--out", str(tmp_path)] + [a for s in TINY for a in ("--set", s)]

    def err_of(args: list[str], code: int = 1) -> str:
        assert main(args) == code
        lines = capsys.readouterr().err.strip().splitlines()
        return lines[-1]

    assert "unknown model 'resnet_9000'" in err_of(base + ["--config", "exp2_scratch_cpu", "--set", "model.name=resnet_9000"])
    msg = err_of(base + ["--config", "exp2_scratch_cpu", "--set", "optim.name=adam"])
    assert "optim.name" in msg and "adamw, sgd" in msg
    assert "valid keys" in err_of(base + ["--config", "exp2_scratch_cpu", "--set", "optim.learning_rate=1"])
    assert "neither a file nor a built-in recipe" in err_of(base + ["--config", "nope"])
    (tmp_path / "empty").mkdir()
    assert "has no checkpoint" in err_of(["train", "--resume", str(tmp_path / "empty")])
    # A copy of the reference run, resumed with another architecture or another class set.
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    other = err_of(["train", "--config", "exp2_scratch_cpu", "--resume", str(copy), "--root", str(data)]
                   + [a for s in TINY + ["model.name=test_efficientnet"] for a in ("--set", s)])
    assert "test_resnet" in other and "test_efficientnet" in other
    two = make_dataset(tmp_path / "two", bad_files=False)
    shutil.rmtree(two / "train" / TINY_CLASSES[2])
    shutil.rmtree(two / "val" / TINY_CLASSES[2])
    msg = err_of(["train", "--resume", str(copy), "--root", str(two)])
    assert "dataset classes differ" in msg and TINY_CLASSES[2] in msg
    # A truncated last.pt falls back to last.pt.prev; with both broken the error names the files.
    ck = copy / "checkpoints"
    (ck / "last.pt").write_bytes((ck / "last.pt").read_bytes()[:1000])
    shutil.copy(ck / "last.pt", ck / "last.pt.prev")
    msg = err_of(["train", "--resume", str(copy)])
    assert "no readable checkpoint" in msg and "corrupt or truncated" in msg


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_in_a_real_process_saves_and_exits_130(data: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "imagenette_lab", "train", "--config", "exp2_scratch_cpu", "--root", str(data),
            "--out", str(tmp_path), "--name", "sig", "--epochs", "200"] + [a for s in TINY for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    hist = tmp_path / "sig" / "history.jsonl"
    deadline = time.time() + 40
    while not hist.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert hist.exists(), proc.communicate()[1][-2000:] if proc.poll() is not None else "no epoch in 40 s"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "--resume" in err
    ck = load_checkpoint(tmp_path / "sig" / "checkpoints" / "last.pt")
    assert ck["epoch"] >= 1
    # Finish it quickly: the resumed run accepts a shorter --epochs (schedule rebuilt).
    assert main(["train", "--resume", str(tmp_path / "sig"), "--epochs", str(ck["epoch"] + 1)]) == 0
    assert json.loads((tmp_path / "sig" / "run.json").read_text())["epochs_run"] == ck["epoch"] + 1


def test_resume_with_more_epochs_switches_the_schedule(data: Path, tmp_path: Path) -> None:
    """1 epoch of few steps uses the short-run LambdaLR; extended to 3 it becomes OneCycleLR, whose
    per-group keys (max_lr, ...) the old optimizer state lacks. Resuming must rebuild them, not crash."""
    extra = TINY + ["data.limit_per_class=4", "data.batch_size=8", "optim.grad_accum=1"]
    assert train(cfg_for(data, tmp_path, "run", extra + ["train.epochs=1"]))["status"] == "complete"
    done = train(resume_config(tmp_path / "run", ["train.epochs=3"]), resume=tmp_path / "run")
    assert done["status"] == "complete" and done["epochs_run"] == 3
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(hist["epoch"]) == [1, 2, 3] and hist["lr"].iloc[-1] < hist["lr"].max()
