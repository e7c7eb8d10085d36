"""Training-step speed options that do not change what is learned: progressive resizing's size
schedule, glibc's heap kept for reuse, global pooling whose backward keeps channels_last, and an
optional torch.compile'd model (see benchmarks/bench_train.py for measurements)."""

from __future__ import annotations

import ctypes
import logging
import platform

import torch
from torch import nn

log = logging.getLogger(__name__)


def progressive_size(img_size: int, min_size: int, frac: float, epoch: int, epochs: int, step: int = 16) -> int:
    """Train crop size at `epoch` (1-based) of a stage of `epochs`: fastai-style progressive resizing.

    Grows linearly from `min_size` to `img_size` over the first `frac` of the epochs (rounded down
    to a multiple of `step`; the last epochs always train at `img_size`).
    """
    if not min_size or min_size >= img_size:
        return img_size
    ramp = max(int(round(frac * epochs)), 1)
    if epoch > ramp:
        return img_size
    size = min_size + (img_size - min_size) * (epoch - 1) / ramp
    return max(min_size, min(img_size, int(size) // step * step))


def reuse_freed_memory() -> bool:
    """Keep freed memory in this process's heap for reuse (glibc on Linux; process-wide, idempotent).

    glibc serves large allocations with fresh mmap'd pages and unmaps them on free, so every training
    step page-faults its activations in again: EfficientNet-B0 at 128 px, batch 64 took 100-225k
    minor faults and 0.2-0.6 s of system time per step on a 2-core CPU. With mmap off and a high trim
    threshold the heap keeps and reuses those pages (~4k faults, 0.01 s per step; peak RSS ~+0.5 GiB
    in fp32). jemalloc or tcmalloc would do the same but must be installed and preloaded.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


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


class _SumPool(nn.AdaptiveAvgPool2d):
    """AdaptiveAvgPool2d(1) as an fp32 sum / count: the same value, a gradient that stays a view."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.sum((2, 3), keepdim=True, dtype=torch.float32) / (x.shape[2] * x.shape[3])
        return mean.to(x.dtype)


def channels_last_pool_grads(model: nn.Module) -> int:
    """Make `model`'s global average pools (AdaptiveAvgPool2d(1)) backward as expanded views.

    mean's backward materialises grad / count as an NCHW tensor. In a squeeze-excitation block
    the pooled activation also feeds a multiply, so autograd adds that NCHW gradient to a
    channels_last one, a strided add plus copies: ~15 % of a bf16 EfficientNet-B0 (torchvision)
    training step on a 2-core CPU, measured. sum's backward is an expand (a view), so the add
    stays channels_last. The modules change class in place: no parameters, state_dict unchanged.
    timm's SE blocks call x.mean() inline and are not reached. Returns how many were switched.
    """
    n = 0
    for m in model.modules():
        if type(m) is nn.AdaptiveAvgPool2d and m.output_size in (1, (1, 1)):
            m.__class__ = _SumPool
            n += 1
    return n
