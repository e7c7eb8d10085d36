"""`train.loggers`: TensorBoard event files and a real MLflow store (SQLite), read back; an unreachable
MLflow server only warns; csv/jsonl stay the default."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest

import imagenette_lab as lab
from imagenette_lab.errors import UserError
from tests.helpers import make_dataset

TINY = {"model.name": "test_resnet", "data.img_size": 16, "data.batch_size": 8, "data.workers": 0,
        "train.amp": "off", "epochs": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("track") / "data", bad_files=False)


def test_tensorboard_and_mlflow_sqlite_get_every_epoch(data: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact folder (./mlruns) lands in the tmp dir
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)

    def stop_after_first(row):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    # Interrupted after epoch 1, then resumed: one MLflow run, KILLED in between, every epoch once.
    with pytest.raises(lab.TrainingInterrupted) as stop:
        lab.train("exp2_scratch_cpu", root=str(data), out_dir=str(tmp_path / "runs"), name="tracked",
                  loggers=["csv", "jsonl", "tensorboard", "mlflow"], mlflow_uri=uri, mlflow_experiment="tests",
                  hooks={"on_epoch_end": stop_after_first}, **TINY)
    run_id = json.loads((stop.value.run_dir / "mlflow.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1]
    r = lab.train(resume=stop.value.run_dir)
    history = [json.loads(line) for line in (r.run_dir / "history.jsonl").read_text().splitlines()]
    assert (r.run_dir / "history.csv").is_file() and len(history) == 2

    # TensorBoard: one scalar per epoch per metric, equal to the history.
    acc = EventAccumulator(str(r.run_dir / "tensorboard"))
    acc.Reload()
    val = acc.Scalars("val_acc")
    assert [e.step for e in val] == [1, 2]
    assert [e.value for e in val] == pytest.approx([h["val_acc"] for h in history])
    assert acc.Scalars("eval/accuracy")[0].value == pytest.approx(r.metrics.accuracy)

    # MLflow, read back through a fresh client on the same SQLite store.
    exp = client.get_experiment_by_name("tests")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_id == run_id
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.name"] == "test_resnet"
    hist = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in hist] == [(h["epoch"], pytest.approx(h["train_loss"])) for h in history]
    assert run.data.metrics["eval_accuracy"] == pytest.approx(r.metrics.accuracy)
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "history.csv", "run.json", "eval"} <= arts
    assert "metrics.json" in {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "eval")}


def test_unreachable_mlflow_warns_and_the_run_completes(data: Path, tmp_path: Path, caplog) -> None:
    pytest.importorskip("mlflow")
    caplog.set_level(logging.WARNING)
    r = lab.train("exp2_scratch_cpu", root=str(data), out_dir=str(tmp_path), name="offline",
                  loggers=["jsonl", "mlflow"], mlflow_uri="http://127.0.0.1:9", **TINY)
    assert r.epochs_run == 2 and (r.run_dir / "run.json").is_file()
    # Nothing lost: the run folder holds every epoch; csv was not asked for.
    assert len((r.run_dir / "history.jsonl").read_text().splitlines()) == 2
    assert not (r.run_dir / "history.csv").exists()
    text = caplog.text
    assert "MLflow tracking (http://127.0.0.1:9)" in text and "training continues" in text
    assert "did not take" in text and str(r.run_dir) in text


def test_loggers_are_validated() -> None:
    with pytest.raises(UserError, match="train.loggers' must be one of csv, jsonl, tensorboard, mlflow, got 'wandb'"):
        lab.load_config("exp2_scratch_cpu", loggers=["csv", "wandb"])
    assert lab.load_config("exp2_scratch_cpu", **{"train.loggers": "csv,tensorboard"}).train.loggers == ["csv", "tensorboard"]
    assert lab.load_config("exp2_scratch_cpu").train.loggers == ["csv", "jsonl"]
