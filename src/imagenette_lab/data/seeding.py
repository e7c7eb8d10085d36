"""Per-sample augmentation randomness from (seed, epoch, sample index), never from worker state.

Why: DataLoader workers draw from their own torch RNG, seeded once per epoch and advanced by every
item the worker happened to process. A run resumed mid-epoch skips the batches already done, so
the remaining batches land on other workers with other RNG states and get other augmentations:
the weights drift from an uninterrupted run. Seeding each item from (seed, epoch, index) makes an
image's augmentation a pure function of where it is in the schedule, whatever the worker count,
prefetching or resume point.

Use it in one of two ways:
- `PerSampleSeed(dataset, seed)` wraps any map-style dataset whose transforms use torch's global
  RNG (torchvision v2 transforms do): each `__getitem__` runs under a forked RNG seeded for that
  item, so the caller's (main process) RNG stream is left untouched. Call `set_epoch(epoch)`
  before iterating (workers are forked per epoch and see the new value).
- Batched augmentation (e.g. on a uint8 tensor cache) draws each sample's parameters from
  `sample_generator(seed, epoch, index)`, or takes `sample_seeds(seed, epoch, indices)` as one
  int64 tensor and derives per-sample random numbers from it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """SplitMix64 finaliser: well-spread, platform-independent (unlike Python's salted hash())."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation in one epoch."""
    return _mix(_mix(_mix(seed & _M64) ^ (epoch & _M64)) ^ (index & _M64)) >> 1


def sample_seeds(seed: int, epoch: int, indices: torch.Tensor | list[int]) -> torch.Tensor:
    """`sample_seed` for a batch of dataset indices, as an int64 tensor (for batched augmentation)."""
    idx = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
    return torch.tensor([sample_seed(seed, epoch, int(i)) for i in idx], dtype=torch.int64)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded for one sample (pass it to torch.rand/randint/randperm)."""
    g = torch.Generator()
    g.manual_seed(sample_seed(seed, epoch, index))
    return g


class PerSampleSeed(Dataset):
    """Wraps a map-style dataset: item i of epoch e always gets the same random augmentation."""

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        # fork_rng restores the global CPU RNG afterwards: with workers=0 the main process's stream
        # (dropout, mixup) stays what it would be without augmentation draws.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, int(i)))
            return self.dataset[i]

    def __getattr__(self, name: str) -> Any:
        # Attributes of the wrapped dataset (index, transform, ...); guarded for unpickling.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
