"""The training task: forward + loss as one module, so DistributedDataParallel wraps one thing.

Like timm's `task/` classes, `TrainTask` owns what a training step computes -- the classifier on
images, or only its head on cached base features -- and the loss. DDP syncs gradients in the
backward of *its wrapped module's* forward, so both stages must run through `task(x, target)`;
calling `model.head_from_pooled` directly (as a lambda) would bypass the gradient all-reduce.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from imagenette_lab.engine.evaluate import amp_dtype, autocast_context
from imagenette_lab.engine.fast import cpu_training_rewrites
from imagenette_lab.engine.optim import loss_fn
from imagenette_lab.engine.precision import fp32_depthwise


class TrainTask(nn.Module):
    """`task(x, target) -> (loss, logits)` for image batches or cached-feature batches (`cached`)."""

    def __init__(self, model: nn.Module, *, cached: bool = False, amp: str = "off",
                 device: torch.device | str = "cpu", label_smoothing: float = 0.0):
        super().__init__()
        self.model = model
        self.cached = cached
        self.amp = amp
        self.device = torch.device(device)
        self.label_smoothing = label_smoothing
        if not cached and self.device.type == "cpu":
            cpu_training_rewrites(model)  # engine/fast.py
            if amp_dtype(self.device, amp) is torch.bfloat16:
                fp32_depthwise(model)  # oneDNN's bf16 depthwise backward is slow: engine/precision.py

    def forward(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        with autocast_context(self.device, self.amp):
            logits = self.model.head_from_pooled(x) if self.cached else self.model(x)
        return loss_fn(logits, target, self.label_smoothing), logits
