"""Everything that changes under torchrun/DDP lives here: rank queries, the sampler, metric reduction.

Today every run is one process and these are trivial; once `torch.distributed` is initialised
(torchrun + `init_process_group`) the same calls shard the data, all-reduce the sums and keep file
I/O on rank 0 -- the training loop itself does not change.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
from torch import Tensor
from torch.utils.data import Sampler


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Only rank 0 writes files, logs progress and draws bars."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of `tensor` over all ranks (a copy; the input is untouched)."""
    out = tensor.detach().clone()
    if is_distributed():
        torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
    return out


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded by rank, that can start part-way through an epoch.

    The order depends only on (seed, epoch), so a resumed run sees exactly the batches an
    uninterrupted run would; `skip` drops the first items of this rank's share, which is how a
    run interrupted mid-epoch picks up at the next batch. Like DistributedSampler it pads by
    repeating items so every rank gets the same count.
    """

    def __init__(self, n: int, shuffle: bool, seed: int = 0, rank_: int = 0, world: int = 1):
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world = rank_, world
        self.epoch = 0
        self.skip = 0
        self.per_rank = math.ceil(n / world) if n else 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, max(int(skip), 0)

    def order(self) -> list[int]:
        """This rank's full index list for the current epoch (before `skip`)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 100_003 + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        total = self.per_rank * self.world
        if idx and len(idx) < total:
            idx += (idx * math.ceil(total / len(idx)))[: total - len(idx)]
        return idx[self.rank : total : self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.skip :])

    def __len__(self) -> int:
        return max(self.per_rank - self.skip, 0)


def make_sampler(dataset: Sized, shuffle: bool, seed: int = 0) -> EpochSampler:
    return EpochSampler(len(dataset), shuffle, seed, rank(), world_size())
