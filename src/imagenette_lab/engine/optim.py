"""Optimizer, per-step LR schedule (with warmup) and the loss, built from `OptimConfig`."""

from __future__ import annotations

import logging
import math
import warnings

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from imagenette_lab.config import CHOICES, OptimConfig
from imagenette_lab.errors import UserError

log = logging.getLogger("imagenette_lab.engine.train")  # one logger for the whole run's lines
SCHEDULE_KEYS = {"initial_lr", "max_lr", "min_lr", "base_momentum", "max_momentum"}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split so norm weights and biases (1-D) get no weight decay."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    if not groups:
        raise UserError("the model has no trainable parameters (is everything frozen?)")
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float | None = None) -> torch.optim.Optimizer:
    lr = cfg.lr if lr is None else lr
    groups = param_groups(model, cfg.weight_decay)
    # Fused kernels (one pass over all parameters, CPU and CUDA): benchmarks/bench_train.py measures them.
    fast = {"fused": True} if _fusable(groups) else {}
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **fast)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, **fast)
    raise UserError(f"unknown optimizer '{cfg.name}'; choose one of {', '.join(CHOICES['optim.name'])}")


def _fusable(groups: list[dict]) -> bool:
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


def warmup_cosine(step: int, total: int, warmup: int, cosine: bool) -> float:
    """LR multiplier: linear warmup from ~0, then cosine decay to 0 (or flat for 'constant')."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, lr: float, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler stepped once per optimizer step over `epochs * steps_per_epoch` steps."""
    total = max(epochs * steps_per_epoch, 1)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.scheduler == "onecycle" and total >= 4:
        # OneCycleLR divides by each phase's length: warmup must span >= 2 steps and leave >= 2 to
        # anneal; a warmup longer than the run is capped to half of it.
        pct = min(max(warmup, 2), max(total // 2, 2)) / total
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total, pct_start=pct, anneal_strategy="cos"
        )
    if cfg.scheduler in ("onecycle", "cosine", "constant"):
        # (onecycle here only for runs of < 4 steps, too short for OneCycleLR's phases)
        cosine = cfg.scheduler != "constant"
        warmup = min(warmup, total // 2)
        # A closure, not a lambda object with state: LambdaLR then saves only counters.
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine(s, total, warmup, cosine)
        )
    raise UserError(
        f"unknown scheduler '{cfg.scheduler}'; choose one of {', '.join(CHOICES['optim.scheduler'])}"
    )


def restore_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, saved: dict, fresh: list[dict],
                      stage: str, old_epochs: int, epochs: int) -> None:
    """Load a checkpoint's scheduler state; for a stage whose epoch count changed (--epochs on resume),
    keep the new schedule and step it to the saved step count instead. `fresh`: the new optimizer's
    param-group settings before the checkpoint's optimizer state was loaded over them."""
    if old_epochs == epochs:
        scheduler.load_state_dict(saved)
        return
    log.warning("stage '%s' now has %d epochs (was %d): the LR schedule is stretched to the new length",
                stage, epochs, old_epochs)
    # The new schedule's own per-group keys (OneCycleLR's max_lr/min_lr, initial_lr), not the old one's:
    # a longer run can switch from the short-run LambdaLR to OneCycleLR.
    for group, new in zip(scheduler.optimizer.param_groups, fresh):
        for k in SCHEDULE_KEYS:
            if k in new:
                group[k] = new[k]
            else:
                group.pop(k, None)
    done = int(saved["last_epoch"])
    limit = getattr(scheduler, "total_steps", done)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while scheduler.last_epoch < min(done, limit):
            scheduler.step()


def loss_fn(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy for int labels or soft (mixup/cutmix) label distributions."""
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
