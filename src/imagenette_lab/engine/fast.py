"""Training-step speed options that do not change what is learned: progressive resizing's size
schedule and an optional torch.compile'd model (see benchmarks/bench_train.py for measurements)."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def progressive_size(img_size: int, min_size: int, frac: float, epoch: int, epochs: int, step: int = 16) -> int:
    """Train crop size at `epoch` (1-based) of a stage of `epochs`: fastai-style progressive resizing.

    Grows linearly from `min_size` to `img_size` over the first `frac` of the epochs (rounded down
    to a multiple of `step`; the last epochs always train at `img_size`, the size evaluated at).
    """
    if not min_size or min_size >= img_size:
        return img_size
    ramp = max(int(round(frac * epochs)), 1)
    if epoch > ramp:
        return img_size
    size = min_size + (img_size - min_size) * (epoch - 1) / ramp
    return max(min_size, min(img_size, int(size) // step * step))


def compiled(model: nn.Module, enabled: bool) -> nn.Module:
    """`model`, or a torch.compile'd wrapper of it (train.compile) for engine/task.py's TrainTask.

    The wrapper shares parameters with `model`, so checkpoints (model.state_dict()) keep their plain
    keys. Compilation happens on the first batch (minutes on a small CPU) and again per new input
    size (progressive resizing): worth it only for long runs; off by default.
    """
    if not enabled:
        return model
    log.info("train.compile: the first batch (and each new image size) compiles the model")
    return torch.compile(model)
