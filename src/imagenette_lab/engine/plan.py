"""Run planning: stages, per-epoch seeds, config checks, the run directory and resume config."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagenette_lab.config import ModelConfig, RunConfig, load_config
from imagenette_lab.engine import distributed as dist
from imagenette_lab.engine.checkpoint import BEST, LAST, checkpoint_dir, find_resume_checkpoint, parse_keep
from imagenette_lab.errors import UserError
from imagenette_lab.runrecord import CURVES, HISTORY_CSV, HISTORY_JSONL, RUN_JSON
from imagenette_lab.utils import prepare_out_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    first: int  # global number of the stage's first epoch (1-based)
    epochs: int
    lr: float
    cached: bool  # head trained on cached base features

    @property
    def last(self) -> int:
        return self.first + self.epochs - 1


def plan_stages(cfg: RunConfig) -> list[Stage]:
    cached = cfg.model.freeze_base and cfg.train.feature_cache
    stages = [Stage("main", 1, cfg.train.epochs, cfg.optim.lr, cached)]
    if cfg.train.finetune_epochs > 0:
        stages.append(Stage("finetune", cfg.train.epochs + 1, cfg.train.finetune_epochs,
                            cfg.train.finetune_lr, False))
    return stages


def initial_weights(m: ModelConfig) -> str | None:
    """The ImageNet weights tag a fresh run starts from (None: random init or `m.weights_file`).

    An explicit `model.pretrained=false` wins over a recipe's `weights:` tag (it used to download
    the tag's weights anyway); the log says the tag is ignored.
    """
    if m.weights_file:
        return None
    if not m.pretrained:
        if m.weights:
            log.warning("model.pretrained=false: ignoring weights '%s' from the config; starting from "
                        "random weights", m.weights)
        return None
    return m.weights or "DEFAULT"


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def validate_config(cfg: RunConfig) -> None:
    checks = [
        (cfg.train.epochs >= 1, "train.epochs must be >= 1"),
        (cfg.train.finetune_epochs >= 0, "train.finetune_epochs must be >= 0"),
        (cfg.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (cfg.data.workers >= 0, "data.workers must be >= 0"),
        (cfg.data.img_size >= 16, "data.img_size must be >= 16"),
        (cfg.data.eval_size == 0 or cfg.data.eval_size >= 16, "data.eval_size must be 0 (= img_size) or >= 16"),
        (cfg.model.drop_path is None or 0 <= cfg.model.drop_path < 1, "model.drop_path must be in [0, 1)"),
        (0 < cfg.data.eval_crop_pct <= 1, "data.eval_crop_pct must be in (0, 1]"),
        (cfg.optim.grad_accum >= 1, "optim.grad_accum must be >= 1"),
        (cfg.optim.lr > 0 and cfg.train.finetune_lr > 0, "learning rates must be > 0"),
        (0 <= cfg.optim.label_smoothing < 1, "optim.label_smoothing must be in [0, 1)"),
        (cfg.train.cache_views >= 1, "train.cache_views must be >= 1"),
        (cfg.train.eval_every >= 1, "train.eval_every must be >= 1"),
        (cfg.train.recalibrate_bn >= 0, "train.recalibrate_bn must be >= 0 (train images; 0 = off)"),
        (not cfg.train.recalibrate_bn or not cfg.model.freeze_base or cfg.train.finetune_epochs > 0,
         "train.recalibrate_bn is for networks trained whole: a frozen base keeps its ImageNet statistics"),
        (not cfg.train.recalibrate_bn or not cfg.train.sync_bn,
         "train.recalibrate_bn runs on one process after training: not with train.sync_bn"),
        (0 <= cfg.train.freeze_last_epochs < cfg.train.epochs,
         "train.freeze_last_epochs must be >= 0 and fewer than train.epochs"),
        (bool(cfg.train.freeze_modules) == (cfg.train.freeze_last_epochs > 0),
         "train.freeze_modules and train.freeze_last_epochs go together (e.g. [base.features.0] and 4)"),
        (not cfg.train.freeze_modules or not (cfg.model.freeze_base or cfg.train.finetune_epochs),
         "train.freeze_modules is for networks trained whole in one stage: not with model.freeze_base or "
         "train.finetune_epochs"),
        (cfg.train.log_every >= 1, "train.log_every must be >= 1"),
        (cfg.data.mixup >= 0 and cfg.data.cutmix >= 0, "data.mixup/cutmix must be >= 0"),
        (cfg.data.cache_size == 0 or cfg.data.cache_size >= max(cfg.data.img_size, cfg.data.eval_px),
         "data.cache_size must be 0 (auto) or at least data.img_size and data.eval_size"),
        (0 <= cfg.data.progressive_min_size <= cfg.data.img_size and 0 < cfg.data.progressive_frac <= 1,
         "data.progressive_min_size must be in [0, img_size] and data.progressive_frac in (0, 1]"),
        (0 <= cfg.data.holdout_frac < 0.5, "data.holdout_frac must be in [0, 0.5)"),
        (cfg.train.select != "holdout" or cfg.data.holdout_frac > 0,
         "train.select=holdout needs data.holdout_frac > 0 (e.g. 0.05)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    parse_keep(cfg.train.checkpoints_keep)


def resume_config(run_dir: str | Path, overrides: list[str] | None = None,
                  extra: dict[str, Any] | None = None) -> RunConfig:
    """The config a run was trained with (from its checkpoint), with CLI changes applied on top."""
    _, ckpt = find_resume_checkpoint(run_dir)
    return load_config(ckpt["config"], overrides, extra)


def prepare_run_dir(cfg: RunConfig, resume: str | Path | None, overwrite: bool) -> Path:
    if resume is not None:
        return prepare_out_dir(resume)
    run_dir = Path(cfg.out_dir).expanduser() / cfg.name
    cdir = checkpoint_dir(run_dir)
    if (cdir / LAST).exists() or (cdir / BEST).exists() or (run_dir / RUN_JSON).exists():
        if not overwrite:
            raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, "
                            "start over with --overwrite (overwrite=True in Python), or pick another name/--out")
        if dist.is_main():
            log.warning("starting over: replacing the run in %s", run_dir)
            (run_dir / RUN_JSON).unlink(missing_ok=True)  # first: the dir is no longer 'complete'
            shutil.rmtree(cdir, ignore_errors=True)
            for name in (HISTORY_CSV, HISTORY_JSONL, CURVES):
                (run_dir / name).unlink(missing_ok=True)
    return prepare_out_dir(run_dir)
