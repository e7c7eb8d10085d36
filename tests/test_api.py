"""The package-level Python API: light import, one override channel, typed results, exceptions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import imagenette_lab as lab
from imagenette_lab.api import Metrics, PredictResult, TrainResult
from imagenette_lab.cli import main
from imagenette_lab.errors import TrainingInterrupted, UsageError, UserError
from tests.helpers import REPO, make_dataset

TINY = {"model.name": "test_resnet", "data.img_size": 16, "data.batch_size": 8, "data.workers": 0,
        "train.amp": "off"}


def test_import_is_light_and_lists_the_api() -> None:
    code = ("import sys, imagenette_lab as lab; cfg = lab.load_config('exp3_transfer', epochs=2); "
            "assert cfg.train.epochs == 2; bad = [m for m in ('torch', 'timm', 'pandas') if m in sys.modules]; "
            "print(bad, sorted(lab.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.startswith("[]"), out
    for name in ("analyze", "zero_shot", "train", "evaluate", "predict", "export", "report", "load_config"):
        assert name in out


def test_functions_and_same_named_modules_coexist() -> None:
    import imagenette_lab.predict as predict_mod
    from imagenette_lab import predict, report

    # The submodule import must not hide the function: both uses work on the same object.
    assert lab.predict is predict_mod is predict and callable(predict) and callable(report)
    assert hasattr(lab.predict, "load_predictor")
    with pytest.raises(UserError, match="does not exist"):
        lab.predict("no/such/checkpoint.pt", ["x.jpg"])
    with pytest.raises(UserError, match="give at least one run directory"):
        lab.report([], "x.html")


def test_load_config_one_override_channel(tmp_path: Path) -> None:
    cfg = lab.load_config("exp2_scratch_cpu", epochs=3, lr=0.01, root="data/x", name="n",
                          model={"name": "resnet18"}, **{"data.img_size": 64})
    assert (cfg.train.epochs, cfg.optim.lr, cfg.data.root, cfg.name, cfg.model.name, cfg.data.img_size) == \
        (3, 0.01, "data/x", "n", "resnet18", 64)
    again = lab.load_config(cfg, seed=7)  # a RunConfig is copied, never changed
    assert again.seed == 7 and cfg.seed == 0 and again.train.epochs == 3
    with pytest.raises(UserError, match="did you mean epochs"):
        lab.load_config("exp2_scratch_cpu", epoch=3)
    with pytest.raises(UserError, match="expects int"):
        lab.load_config("exp2_scratch_cpu", epochs="many")
    (tmp_path / "r.yaml").write_text("train:\n  epochs: 4\n")
    assert lab.load_config(tmp_path / "r.yaml").train.epochs == 4


def test_train_returns_typed_result_refuses_overwrite_and_raises_on_interrupt(tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "data", bad_files=False)
    kw = dict(root=str(data), out_dir=str(tmp_path / "runs"), name="api", epochs=2, **TINY)
    r = lab.train("exp2_scratch_cpu", **kw)
    assert isinstance(r, TrainResult) and isinstance(r.metrics, Metrics)
    assert r.checkpoint == tmp_path / "runs" / "api" / "checkpoints" / "best.pt" and r.checkpoint.is_file()
    assert r.epochs_run == 2 and 0.0 <= r.metrics.accuracy <= 1.0
    assert r.record["metrics"]["accuracy"] == r.metrics.accuracy
    assert json.loads((r.run_dir / "run.json").read_text())["epochs_run"] == 2

    # Same run folder: refused, the message names the flag, and nothing was deleted.
    with pytest.raises(UserError, match=r"overwrite=True"):
        lab.train("exp2_scratch_cpu", **kw)
    assert r.checkpoint.is_file() and (r.run_dir / "run.json").is_file()

    def ctrl_c(info):
        if (info["epoch"], info["step"]) == (1, 1):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted) as e:
        lab.train("exp2_scratch_cpu", overwrite=True, hooks={"on_step_end": ctrl_c}, **kw)
    assert e.value.exit_code == 130 and e.value.run_dir == r.run_dir
    assert e.value.checkpoint == r.run_dir / "checkpoints" / "last.pt" and e.value.checkpoint.is_file()
    assert f"--resume {r.run_dir}" in str(e.value)
    with pytest.raises(UsageError, match="resumed run stays"):
        lab.train(resume=r.run_dir, name="elsewhere")
    done = lab.train(resume=r.run_dir)
    assert done.epochs_run == 2 and done.record["resumed"]

    ev = lab.evaluate(done.run_dir, data, tmp_path / "eval", workers=0)
    assert ev.metrics.accuracy == done.metrics.accuracy and ev.n_images == 9 and ev.accuracy_ci is not None

    preds = lab.predict(done.checkpoint, data / "val", top_k=2, workers=0)
    assert isinstance(preds, PredictResult) and len(preds) == 9 and preds.backend == "pytorch"
    assert all(len(p.top) == 2 and p.top[0].probability >= p.top[1].probability for p in preds)
    assert preds.images_per_s > 0

    # The insight commands: typed results from saved logits, Grad-CAM and the audit.
    cal = lab.calibrate(done.run_dir)
    assert [c.eval_dir.name for c in cal] == ["eval"] and 0.0 <= cal[0].ece <= 1.0
    assert (cal[0].eval_dir / "reliability.png").is_file()
    (tmp_path / "junk.jpg").write_text("not an image")
    ex = lab.explain(done.checkpoint, [data / "val", tmp_path / "junk.jpg"], tmp_path / "cam", device="cpu")
    assert len(ex.explanations) == 9 and all(e.figure.is_file() for e in ex.explanations)
    assert ex.skipped and ex.skipped[0][0] == tmp_path / "junk.jpg"
    with pytest.raises(UserError, match="tench"):  # an unknown class lists the valid ones
        lab.explain(done.checkpoint, data / "val", tmp_path / "cam2", class_name="unicorn", device="cpu")
    au = lab.audit(data, tmp_path / "audit", model="pixels", workers=0, gallery=2)
    assert au.images == len(list(data.rglob("*.JPEG"))) and au.label_issues is not None
    assert set(au.duplicate_pairs) >= {"train-val"} and au.cross_split_pairs == au.duplicate_pairs["train-val"]
    with pytest.raises(UsageError, match="cos_min"):
        lab.audit(data, tmp_path / "audit", cos=0.5)

    # The CLI turns the exception into one line and the exit code.
    args = ["train", "--config", "exp2_scratch_cpu", "--root", str(data), "--out", str(tmp_path / "runs"),
            "--name", "api", "--epochs", "1"] + [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and "Traceback" not in err[0]
