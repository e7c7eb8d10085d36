"""Experiment tracking: per-epoch metrics to TensorBoard and/or MLflow, chosen with `train.loggers`.

csv/jsonl (history.csv/.jsonl, the default): `write_history`, after every epoch; this module also has
- tensorboard: `torch.utils.tensorboard` event files in `<run>/tensorboard/` (`tensorboard --logdir runs`);
- mlflow: one MLflow run per training run (`train.mlflow_uri`, `train.mlflow_experiment`): the
  config as params, every epoch's metrics (step = epoch), the final evaluation, and the run's files
  (config, history, curves, run.json, eval/) as artifacts. The run id is kept in `<run>/mlflow.json`
  so `--resume` continues the same MLflow run.
A tracking server that cannot be reached never stops training: a warning, the epochs are kept and
sent once it answers (at the latest when the run ends); the run folder holds everything regardless.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from imagenette_lab.config import RunConfig
from imagenette_lab.errors import UserError
from imagenette_lab import runrecord as rr
from imagenette_lab.utils import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

RUN_FILES = (rr.CONFIG, rr.HISTORY_CSV, rr.HISTORY_JSONL, rr.CURVES, rr.RUN_JSON)


def write_history(run_dir: Path, history: list[dict[str, Any]], loggers: list[str],
                  plot_title: str | None = None) -> None:
    """history.jsonl / history.csv (each if in `loggers`, written whole and atomically), and curves.png
    when `plot_title` is given."""
    # pandas first, before any file is written: a failure in its slow first import (or a second Ctrl-C,
    # which aborts at once) then leaves no jsonl without its csv.
    import pandas as pd

    if "jsonl" in loggers:
        atomic_write_text(run_dir / rr.HISTORY_JSONL, "".join(json.dumps(r) + "\n" for r in history))
    if "csv" in loggers:
        atomic_write_text(run_dir / rr.HISTORY_CSV, pd.DataFrame(history).to_csv(index=False))
    if plot_title is not None:
        from imagenette_lab.plots import plot_history

        plot_history(history, run_dir / rr.CURVES, title=plot_title)


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = ",".join(map(str, v)) if isinstance(v, list) else str(v)
    return out


class TensorBoardSink:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("train.loggers=tensorboard needs tensorboard: pip install 'imagenette-lab[tracking]'") from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(cfg.to_dict(), indent=2) + "\n```")

    def epoch(self, row: dict[str, Any]) -> None:
        for k, v in _numbers(row).items():
            self.writer.add_scalar(k, v, int(row["epoch"]))
        self.writer.flush()  # an interrupted run keeps every finished epoch

    def finish(self, status: str, summary: dict[str, Any], run_dir: Path) -> None:
        step = int(summary.get("epochs_run") or 0)
        for k, v in _numbers(summary.get("metrics") or {}).items():
            self.writer.add_scalar(f"eval/{k}", v, step)
        self.writer.close()


class MlflowSink:
    """MLflow through MlflowClient (no global state); failures are warnings and calls are queued."""

    def __init__(self, cfg: RunConfig, run_dir: Path, resumed: bool):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError("train.loggers=mlflow needs mlflow: pip install 'imagenette-lab[tracking]'") from None
        self.uri = cfg.train.mlflow_uri
        self.client = MlflowClient(tracking_uri=self.uri)
        self.uri = self.uri or self.client.tracking_uri
        self.cfg, self.run_dir = cfg, run_dir
        self.state_file = run_dir / "mlflow.json"
        self.run_id: str | None = None
        if resumed and self.state_file.is_file():
            saved = json.loads(self.state_file.read_text())
            if saved.get("tracking_uri") == self.uri:
                self.run_id = saved.get("run_id")
        self.pending: list[tuple[str, Callable[[], None]]] = []
        self.warned = False
        if self.run_id is None:
            self._call("start", self._start)
        else:
            self._call("resume", lambda: self.client.update_run(self.run_id, status="RUNNING"))

    # -- failure handling: try now, else keep the call for later
    def _reachable(self) -> bool:
        u = urlparse(str(self.uri))
        if u.scheme not in ("http", "https"):
            return True  # local stores fail fast by themselves
        try:
            socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=3).close()
            return True
        except OSError:
            return False

    def _call(self, what: str, fn: Callable[[], None]) -> None:
        self.pending.append((what, fn))
        self._flush()

    def _flush(self) -> bool:
        if self.pending and not self._reachable():
            self._warn(f"{self.uri} is not reachable")
            return False
        while self.pending:
            what, fn = self.pending[0]  # a failed start stays first, so it is retried first
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - any MLflow/store/network failure must not stop training
                self._warn(f"{what} failed: {str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}")
                return False
            self.pending.pop(0)
        return True

    def _warn(self, reason: str) -> None:
        if not self.warned:
            log.warning("MLflow tracking (%s): %s; training continues, the epochs are kept and sent when it "
                        "answers; the run folder has everything", self.uri, reason)
        self.warned = True

    # -- MLflow calls
    def _start(self) -> None:
        name = self.cfg.train.mlflow_experiment
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        run = self.client.create_run(exp_id, run_name=self.cfg.name,
                                     tags={"imagenette_lab.run_dir": str(self.run_dir.resolve())})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in _flat(self.cfg.to_dict()).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        atomic_write_json(self.state_file, {"tracking_uri": self.uri, "run_id": self.run_id, "experiment_id": exp_id})

    def _metrics(self, values: dict[str, float], step: int) -> Callable[[], None]:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        return lambda: self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in values.items()])

    def epoch(self, row: dict[str, Any]) -> None:
        self._call(f"epoch {row['epoch']}", self._metrics(_numbers(row), int(row["epoch"])))

    def finish(self, status: str, summary: dict[str, Any], run_dir: Path) -> None:
        step = int(summary.get("epochs_run") or 0)
        final = {f"eval_{k}": v for k, v in _numbers(summary.get("metrics") or {}).items()}
        probe = summary.get("probe") or {}
        if isinstance(probe.get("val_accuracy"), (int, float)):
            final["probe_val_accuracy"] = float(probe["val_accuracy"])
        if final:
            self._call("final metrics", self._metrics(final, step))

        def artifacts() -> None:
            for name in RUN_FILES:
                if (run_dir / name).is_file():
                    self.client.log_artifact(self.run_id, str(run_dir / name))
            if (run_dir / "eval").is_dir():
                self.client.log_artifacts(self.run_id, str(run_dir / "eval"), artifact_path="eval")

        self._call("artifacts", artifacts)
        self._call("status", lambda: self.client.set_terminated(self.run_id, status=status))
        if self.pending:
            log.warning("MLflow (%s) did not take %d update(s) of this run (%s); the run folder %s has them all",
                        self.uri, len(self.pending), ", ".join(w for w, _ in self.pending[:4]), run_dir)


class Tracker:
    """Fans the trainer's epoch rows and final summary out to the configured sinks."""

    def __init__(self, sinks: list[Any], run_dir: Path):
        self.sinks, self.run_dir, self.done = sinks, run_dir, False

    def epoch(self, row: dict[str, Any]) -> None:
        for s in self.sinks:
            s.epoch(row)

    def finish(self, status: str = "FINISHED", summary: dict[str, Any] | None = None) -> None:
        """status: FINISHED, KILLED (interrupted) or FAILED; idempotent."""
        if self.done:
            return
        self.done = True
        for s in self.sinks:
            s.finish(status, summary or {}, self.run_dir)

    def hooks(self, hooks: dict[str, Callable] | None) -> dict[str, Callable]:
        """`hooks` with on_epoch_end also feeding this tracker (the caller's hook runs too)."""
        hooks = dict(hooks or {})
        user = hooks.get("on_epoch_end")

        def on_epoch_end(row: dict[str, Any]) -> None:
            self.epoch(row)
            if user:
                user(row)

        if self.sinks:
            hooks["on_epoch_end"] = on_epoch_end
        return hooks


def start(cfg: RunConfig, run_dir: Path, resumed: bool = False, main: bool = True) -> Tracker:
    """The sinks `cfg.train.loggers` asks for (none on non-main DDP ranks)."""
    loggers = set(cfg.train.loggers) if main else set()
    sinks: list[Any] = []
    if "tensorboard" in loggers:
        sinks.append(TensorBoardSink(cfg, run_dir))
    if "mlflow" in loggers:
        sinks.append(MlflowSink(cfg, run_dir, resumed))
    return Tracker(sinks, run_dir)
