"""The epoch loop: one training pass (images or cached features), validation, stop requests.

Interrupts: SIGINT/SIGTERM only set a flag while an epoch runs; the loop stops at the next
optimizer-step boundary, where model, optimizer, scheduler, RNG state and the epoch's running
sums are consistent, so `train` can save a mid-epoch checkpoint that resumes bit-exactly (also
with worker processes: augmentation is seeded per sample, see data/seeding.py). `train` defers over
the whole epoch, so a signal after the last step waits for validation and the checkpoint and history
writes instead of breaking them half-way. A second signal, or a signal outside an epoch (feature
extraction, final evaluation), raises at once.
Under torchrun a stop request on any rank is shared at the next step boundary, so every rank stops
at the same step (see `StopRequest.check`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from imagenette_lab.engine import distributed as dist
from imagenette_lab.engine.checkpoint import capture_rng
from imagenette_lab.engine.progress import ProgressLines

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM; `signum` gives the exit status 128 + signum."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class NonFiniteLoss(RuntimeError):
    pass


class StopRequest:
    """SIGINT/SIGTERM handlers for the duration of a run (main thread only; restored on exit)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferred = False  # True inside an epoch: stop at the next step boundary or the epoch's end
        self.repeat_aborts = True
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        # torchrun forwards the terminal's Ctrl-C to its workers, which got it already: under torchrun a
        # repeat must not abort the checkpoint (torchrun itself SIGKILLs after its shutdown timeout).
        self.repeat_aborts = not dist.is_distributed()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        self.signum = signum
        if not self.deferred or (not first and self.repeat_aborts):
            raise Interrupted(signum)
        log.warning("%s: stopping at the next step (or the epoch's end) and saving a checkpoint%s",
                    signal.Signals(signum).name, " (again to abort now)" if self.repeat_aborts else "")

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """Signals only set the flag inside; nested uses keep the outer state."""
        outer, self.deferred = self.deferred, True
        try:
            yield
        finally:
            self.deferred = outer

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise Interrupted if any rank was asked to stop (a collective under torchrun: every rank
        calls it at the same points, so all stop at the same step)."""
        signum = dist.reduce_max(self.signum or 0)
        if signum:
            self.signum = self.signum or signum
            raise Interrupted(signum)


def ignore_signals_in_worker(worker_id: int) -> None:
    """Workers share the terminal's process group: only the main process reacts to Ctrl-C/SIGTERM
    (it then stops the workers itself), so the loader is not broken while a checkpoint is saved."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@dataclass
class EpochState:
    """Running sums of one epoch; also the mid-epoch part of a checkpoint."""

    step: int = 0  # micro-batches consumed (including empty/skipped ones)
    loss_sum: float = 0.0
    correct: int = 0
    n: int = 0
    seconds: float = 0.0
    seen: set[int] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "loss_sum": self.loss_sum, "correct": self.correct, "n": self.n,
                "seconds": self.seconds, "seen": sorted(self.seen)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EpochState":
        return cls(d["step"], d["loss_sum"], d["correct"], d["n"], d["seconds"], set(d["seen"]))


@dataclass
class StepContext:
    """What one optimizer loop needs. `task(x, target) -> (loss, logits)` (engine/task.py, possibly
    DDP-wrapped) runs the forward; `model` is the bare classifier (train mode, optimizer, clipping)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    device: torch.device
    task: nn.Module
    amp: str = "off"
    channels_last: bool = False
    mixer: Callable | None = None
    label_smoothing: float = 0.0
    grad_accum: int = 1
    grad_clip: float = 0.0
    on_step_end: Callable[[dict[str, Any]], None] | None = None
    log_every: int = 20
    # Filled while running: the last consistent point (see module docstring).
    boundary: dict[str, Any] | None = None
    in_update: bool = False


def _finish_group(ctx: StepContext, pending: int, group: int, synced: bool) -> None:
    """Make the accumulated gradients the mean over the group's micro-batches that really ran
    (fewer than planned when some were skipped), averaged over ranks even if DDP never synced."""
    params = [p for g in ctx.optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not synced:
        dist.average_gradients(params)
    if pending < group:
        for p in params:
            p.grad.mul_(group / pending)


def _optimizer_step(ctx: StepContext) -> None:
    ctx.in_update = True  # an exception in here leaves parameters half-updated: no mid-epoch save
    if ctx.grad_clip > 0:
        ctx.scaler.unscale_(ctx.optimizer)
        params = [p for g in ctx.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, ctx.grad_clip)
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scheduler.step()
    ctx.in_update = False


def train_epoch(
    ctx: StepContext, loader: DataLoader, state: EpochState, stop: StopRequest, *, epoch: int, desc: str
) -> EpochState:
    """Continue (or start) an epoch at `state.step`; the loader must already skip those batches."""
    ctx.task.train()  # the task (and DDP wrapper) and the classifier inside it
    ctx.boundary = {"state": state.to_dict(), "rng": capture_rng()}
    pending = 0  # micro-batches whose gradients are accumulated but not yet applied
    group, synced = ctx.grad_accum, True  # micro-batches in this accumulation group; DDP synced the last
    end = state.step + len(loader)
    start = time.perf_counter()
    bar = tqdm(loader, total=end, initial=state.step, desc=desc, unit="batch",
               disable=None if dist.is_main() else True, leave=False)
    lines = ProgressLines(desc, end, n_start=state.n)  # log lines instead of the bar off a terminal
    with stop.deferring(), bar:  # the bar closes on an interrupt too
        for batch in bar:
            state.step += 1
            usable = batch is not None and len(batch[1]) > 1  # BatchNorm cannot train on one sample
            if dist.world_size() > 1:  # under DDP every rank must run the same backward passes
                usable = not dist.reduce_max(int(not usable))
            if usable:
                if pending == 0:  # the epoch's last group may hold fewer than grad_accum micro-batches
                    group = min(ctx.grad_accum, end - state.step + 1)
                x, y, idx = batch
                state.seen.update(idx.tolist())
                x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
                target: Tensor = y
                if ctx.mixer is not None:
                    x, target = ctx.mixer(x, y)
                if ctx.channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                synced = pending + 1 >= group  # DDP all-reduces gradients only on a group's last backward
                with dist.no_sync(ctx.task, not synced):
                    loss, logits = ctx.task(x, target)
                    if not torch.isfinite(loss):
                        raise NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch}, batch {state.step}")
                    ctx.scaler.scale(loss / group).backward()
                pending += 1
                state.loss_sum += loss.item() * len(y)
                state.correct += int((logits.argmax(1) == y).sum())
                state.n += len(y)
            elif batch is not None:
                state.seen.update(batch[2].tolist())
            # The epoch's last micro-batch applies a short accumulation tail too.
            if pending and (pending == group or state.step == end):
                _finish_group(ctx, pending, group, synced)
                _optimizer_step(ctx)
                pending = 0
            if pending == 0:
                state.seconds += time.perf_counter() - start
                start = time.perf_counter()
                ctx.boundary = {"state": state.to_dict(), "rng": capture_rng()}
                if ctx.on_step_end is not None:
                    ctx.on_step_end({"epoch": epoch, "step": state.step, "state": state})
                lines.update(state.step, state.n, state.loss_sum, state.correct)
                if state.step % ctx.log_every == 0 and state.n:
                    bar.set_postfix(loss=f"{state.loss_sum / state.n:.3f}",
                                    acc=f"{state.correct / state.n:.3f}", refresh=False)
                stop.check()
    state.seconds += time.perf_counter() - start
    return state


def reduce_epoch(state: EpochState) -> dict[str, float]:
    t = dist.reduce_sum(torch.tensor([state.loss_sum, float(state.correct), float(state.n)],
                                     dtype=torch.float64))
    n = max(t[2].item(), 1.0)
    return {"train_loss": t[0].item() / n, "train_acc": t[1].item() / n, "train_n": int(t[2].item())}


def val_metrics(logits: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """Loss/accuracy/macro-F1 from a confusion matrix summed over ranks (so DDP needs no gather)."""
    if labels.numel():
        loss_sum = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum").double()
        cm = torch.bincount(labels * num_classes + logits.argmax(1), minlength=num_classes * num_classes)
    else:  # a rank whose val shard is empty (more ranks than val images) still joins the reduction
        loss_sum, cm = torch.zeros((), dtype=torch.float64), torch.zeros(num_classes * num_classes)
    cm = dist.reduce_sum(cm.reshape(num_classes, num_classes).double())
    loss_sum = dist.reduce_sum(loss_sum.reshape(1))[0]
    n = cm.sum().clamp(min=1)
    tp = cm.diag()
    precision = tp / cm.sum(0).clamp(min=1)
    recall = tp / cm.sum(1).clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"val_loss": (loss_sum / n).item(), "val_acc": (tp.sum() / n).item(),
            "val_f1": f1.mean().item(), "val_n": int(cm.sum().item())}


@torch.inference_mode()
def head_logits(model: nn.Module, feats: Tensor, batch_size: int = 1024) -> Tensor:
    """Head outputs for cached features, in eval mode (mode restored)."""
    was = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        outs = [model.head_from_pooled(feats[i : i + batch_size].to(device).float()).cpu()
                for i in range(0, len(feats), batch_size)]
    finally:
        model.train(was)
    return torch.cat(outs).float() if outs else torch.empty(0)
