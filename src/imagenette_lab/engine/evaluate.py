"""The one batched inference loop: training's validation pass, feature extraction, zero-shot and predict.

Images that fail to decode arrive as None from `ImageFolder` and are dropped by `collate_skip`, so
a result carries the dataset `indices` that actually arrived; callers align labels/paths with them
instead of assuming every item came through.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from imagenette_lab.data.dataset import SplitIndex, collate_skip
from imagenette_lab.engine.distributed import is_main
from imagenette_lab.engine.progress import ProgressLines
from imagenette_lab.errors import UserError

AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA when present, else CPU; an explicit device must exist."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' requested but CUDA is not available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device '{name}' does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"device '{name}' requested but MPS is not available; use --device cpu")
    elif device.type != "cpu":
        raise UserError(f"unsupported device '{name}' (use auto, cpu, cuda or cuda:N)")
    return device


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `amp` on `device`, or None for full fp32."""
    if amp not in AMP_CHOICES:
        raise UserError(f"unknown amp mode '{amp}' (choose from {', '.join(AMP_CHOICES)})")
    if amp == "off":
        return None
    if amp == "auto":
        # fp16 is the widely supported fast path on CUDA. On a CPU bf16 pays only with native
        # bf16 instructions (AMX/AVX512-BF16); emulated it is slower than fp32 (engine/precision.py).
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu":
            from imagenette_lab.engine.precision import cpu_precision

            return cpu_precision().dtype
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast_context(device: torch.device, amp: str = "auto") -> ContextManager[Any]:
    """torch.autocast for the resolved dtype, or a no-op context when amp is off."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    shuffle: bool = False,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    seed: int = 0,
) -> DataLoader:
    """DataLoader that skips undecodable images; shuffling is seeded so runs repeat exactly."""
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if workers < 0:
        raise UserError(f"workers must be 0 or more, got {workers}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skip,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        # Off: workers are re-forked each pass, which keeps memory flat across long runs and
        # avoids stale workers when a dataset is modified between epochs.
        persistent_workers=False,
        generator=generator,
    )


@dataclass
class InferenceResult:
    """Per-item outputs of the items that arrived, in loader order."""

    outputs: Tensor  # float32, (N', ...) e.g. logits N' x K
    labels: Tensor  # int64, (N',)
    indices: Tensor  # int64, (N',) dataset indices; undecodable items are missing
    n_skipped: int
    seconds: float

    @property
    def n(self) -> int:
        return int(self.indices.numel())

    @property
    def images_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0


def _expected_items(loader: DataLoader) -> int:
    if loader.drop_last and loader.batch_size:
        return len(loader) * loader.batch_size
    return len(loader.sampler)  # type: ignore[arg-type]


def tta_fn(tta: str | None) -> Callable[[nn.Module, Tensor], Tensor] | None:
    """`run_inference`'s fn for test-time augmentation: "flip" averages the logits of each image and
    its horizontal mirror (what the flip in training augments; FFCV's `lr_tta`), at twice the cost."""
    if tta in (None, "", "none"):
        return None
    if tta == "flip":
        return lambda m, x: (m(x) + m(x.flip(-1))) / 2
    raise UserError(f"unknown test-time augmentation '{tta}' (choose none or flip)")


def run_inference(
    model: nn.Module,
    loader: DataLoader,
    *,
    device: torch.device | str = "auto",
    amp: str = "auto",
    channels_last: bool = True,
    desc: str = "eval",
    fn: Callable[[nn.Module, Tensor], Tensor] | None = None,
) -> InferenceResult:
    """Run `fn(model, x)` (default `model(x)`) over `loader` in eval mode, without autograd.

    The model is moved to `device` (and to channels_last when asked); its train/eval mode is
    restored afterwards so a training loop can call this for its validation pass.
    """
    if not isinstance(device, torch.device):
        device = resolve_device(device)
    fn = fn or (lambda m, x: m(x))
    was_training = model.training
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.eval()
    outputs: list[Tensor] = []
    labels: list[Tensor] = []
    indices: list[Tensor] = []
    start = time.perf_counter()
    try:
        # disable=None: the bar shows on a terminal and stays out of redirected logs (rank 0's only).
        with torch.inference_mode(), tqdm(
            total=_expected_items(loader), desc=desc, unit="img", disable=None if is_main() else True, leave=False
        ) as bar:
            lines, n_done = ProgressLines(desc, len(loader)), 0  # plain log lines when not on a terminal
            for step, batch in enumerate(loader, 1):
                if batch is None:  # every image of this batch was undecodable
                    bar.update(loader.batch_size or 0)
                    continue
                x, y, idx = batch
                x = x.to(device, non_blocking=True)
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast_context(device, amp):
                    out = fn(model, x)
                if not isinstance(out, Tensor):
                    raise TypeError(f"inference fn must return a Tensor, got {type(out).__name__}")
                outputs.append(out.float().cpu())
                labels.append(torch.as_tensor(y, dtype=torch.int64))
                indices.append(torch.as_tensor(idx, dtype=torch.int64))
                bar.update(len(idx))
                n_done += len(idx)
                lines.update(step, n_done)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    if outputs:
        out_t = torch.cat(outputs)
    else:
        out_t = torch.empty(0, 0)
    idx_t = torch.cat(indices) if indices else torch.empty(0, dtype=torch.int64)
    return InferenceResult(
        outputs=out_t,
        labels=torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64),
        indices=idx_t,
        n_skipped=max(_expected_items(loader) - int(idx_t.numel()), 0),
        seconds=seconds,
    )


def skipped_paths(index: SplitIndex, result: Any, expected: list[int] | None = None) -> list[str]:
    """Paths of the items (all of `index`, or just `expected` indices) that never arrived.

    `result` is anything with an `indices` tensor: an InferenceResult or cached features.
    """
    arrived = set(result.indices.tolist())
    wanted = range(len(index.samples)) if expected is None else expected
    return [str(index.samples[i].path) for i in wanted if i not in arrived]
