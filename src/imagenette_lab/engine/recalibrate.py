"""BatchNorm statistics re-estimated at the evaluation view after training (`train.recalibrate_bn`).

The running statistics BatchNorm keeps while training (an exponential average, mostly over the last
few dozen batches) come from random-resized crops at the train size: the objects in them are larger
than in the centre crop at data.eval_size the model is scored on (Touvron et al. 2019, FixRes). A
forward pass over the eval views of N train images replaces them with a plain average; the weights are
untouched and val is never seen. Hand-written rather than torch.optim.swa_utils.update_bn, which puts
the whole model in train mode: here only BatchNorm is, so dropout and stochastic depth stay off.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from imagenette_lab.data.dataset import SplitIndex
from imagenette_lab.data.sources import make_dataset
from imagenette_lab.engine.evaluate import autocast_context, make_loader


@torch.no_grad()
def recalibrate_bn(model: nn.Module, index: SplitIndex, transform: Any, source: dict[str, Any], n: int, *,
                   batch_size: int, workers: int, device: torch.device, amp: str, channels_last: bool,
                   seed: int) -> dict[str, Any]:
    """Replace every BatchNorm's running mean/var with their average over `n` images of `index`
    (a seeded sample, seen through `transform`); returns what was done, for the checkpoint and run.json."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    order = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    loader = make_loader(Subset(make_dataset(index, transform, **source), order), batch_size, workers)
    was_training, momenta = model.training, [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    seen, start = 0, time.perf_counter()
    try:
        for batch in loader:
            if batch is None or len(batch[1]) < 2:  # all undecodable; a BatchNorm1d needs two samples
                continue
            x = batch[0].to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp):
                model(x)
            seen += len(x)
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    return {"images": seen, "layers": len(bns), "seconds": round(time.perf_counter() - start, 2)}
