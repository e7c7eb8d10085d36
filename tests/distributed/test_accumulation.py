"""Gradient accumulation: the epoch's short last group is averaged over the micro-batches it holds."""

from __future__ import annotations

import torch
from torch import nn

from imagenette_lab.engine.loop import EpochState, StepContext, StopRequest, train_epoch
from imagenette_lab.engine.task import TrainTask


def test_short_last_accumulation_group_is_a_mean_of_what_it_holds() -> None:
    torch.manual_seed(0)
    batches = [(torch.randn(4, 3), torch.randint(0, 2, (4,)), torch.arange(4 * i, 4 * i + 4)) for i in range(3)]
    model = nn.Linear(3, 2)
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    ctx = StepContext(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
                      torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"), TrainTask(model),
                      grad_accum=2)
    state = train_epoch(ctx, batches, EpochState(), StopRequest(), epoch=1, desc="t")
    assert state.n == 12

    # By hand: one step on the mean of micro-batches 1-2, then one on micro-batch 3 alone (divisor 1, not 2).
    ref = nn.Linear(3, 2)
    with torch.no_grad():
        for p, w in zip(ref.parameters(), w0):
            p.copy_(w)
    for group in (batches[:2], batches[2:]):
        ref.zero_grad()
        for x, y, _ in group:
            (nn.functional.cross_entropy(ref(x), y) / len(group)).backward()
        with torch.no_grad():
            for p in ref.parameters():
                p -= p.grad
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)
