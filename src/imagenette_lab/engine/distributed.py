"""Everything that changes under torchrun/DDP lives here: process-group setup, rank queries, samplers,
reductions and the DDP wrapper.

A plain run is one process and every call here is trivial. Under `torchrun` (which sets RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT) `launched` joins the process group (gloo on CPU, nccl on
CUDA, one GPU per local rank), checks that every rank got the same config, and leaves it at the end;
the engine then shards data with these samplers, sums metrics over ranks and keeps file I/O on rank 0.
Rank failures are torchrun's job (it stops the other workers when one dies); a collective that
loses its peer, or times out, becomes one clear error line here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import socket
import time
from collections.abc import Iterator, Sized
from contextlib import nullcontext
from datetime import timedelta
from typing import Any, Callable, ContextManager

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler

from imagenette_lab.errors import UserError

log = logging.getLogger(__name__)

TIMEOUT_ENV = "IMAGENETTE_LAB_DIST_TIMEOUT"
# Long enough for rank 0's one-off work that others wait on (probe fit, checkpoint write), short
# enough that a hung peer does not hold GPUs for torch's default 30 min (gloo).
DEFAULT_TIMEOUT_S = 900


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if is_distributed() else 0


def is_main() -> bool:
    """Only rank 0 writes files, logs progress and draws bars."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def _collective_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo takes CPU tensors.
    if is_distributed() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of `tensor` over all ranks (a copy; the input is untouched)."""
    out = tensor.detach().clone()
    if is_distributed():
        dev = out.device
        out = out.to(_collective_device())
        torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
        out = out.to(dev)
    return out


def reduce_max(value: int) -> int:
    """The largest `value` over all ranks (every rank must call it at the same point)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_collective_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


def all_gather_object(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def rank_seed(seed: int) -> int:
    """Per-rank stream of randomness (augmentation, dropout, mixup); rank 0 keeps `seed` itself,
    so a one-process run is unchanged."""
    return seed + 7_919 * rank()


# ----------------------------------------------------------------------------- samplers
class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded by rank, that can start part-way through an epoch.

    The order depends only on (seed, epoch), so a resumed run sees exactly the batches an
    uninterrupted run would; `skip` drops the first items of this rank's share, which is how a
    run interrupted mid-epoch picks up at the next batch. Like DistributedSampler it pads by
    repeating items so every rank gets the same count (every rank must run the same number of
    steps); rank r takes items r, r + W, ... so with per-rank batch b the union of the ranks' k-th
    batches is the one-process run's k-th batch of size W * b.
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


class ShardSampler(Sampler[int]):
    """Items rank, rank + W, ... in order, without padding: every item is seen by exactly one rank
    (evaluation and feature extraction, where a padded duplicate would be counted twice)."""

    def __init__(self, n: int, rank_: int | None = None, world: int | None = None):
        self.n = n
        self.rank = rank() if rank_ is None else rank_
        self.world = world_size() if world is None else world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def make_sampler(dataset: Sized, shuffle: bool, seed: int = 0) -> EpochSampler:
    return EpochSampler(len(dataset), shuffle, seed, rank(), world_size())


def shard(x: Tensor) -> Tensor:
    """This rank's rows of `x` (the same split as ShardSampler)."""
    return x[rank() :: world_size()]


def gather_cat(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Each tensor concatenated over ranks (rank order), on the CPU; sizes may differ per rank."""
    if not is_distributed():
        return tensors
    parts = all_gather_object([t.cpu() for t in tensors])
    return tuple(torch.cat([p[i] for p in parts]) for i in range(len(tensors)))


def rank_boundary(ckpt: dict[str, Any]) -> dict[str, Any]:
    """{"state", "rng"} for this rank to resume a mid-epoch checkpoint.

    Saved under DDP with the same number of ranks: each rank gets its own running sums and RNG.
    Otherwise the sums of all saved ranks go to rank 0 (the others start from zero) and only rank 0
    restores the saved RNG, so the epoch's metrics stay whole; its remaining batches then differ
    from an uninterrupted run because the data is sharded differently."""
    ranks = ckpt.get("rank_boundaries") or [{"state": ckpt["partial"], "rng": ckpt["rng"]}]
    if len(ranks) == world_size():
        return ranks[rank()]
    log.warning("resuming mid-epoch with %d processes, saved with %d: the rest of epoch %d is not "
                "bit-exact (resume at an epoch boundary is)", world_size(), len(ranks), ckpt["epoch"] + 1)
    state = dict(ranks[0]["state"])
    if rank() == 0:
        for key in ("loss_sum", "correct", "n", "seconds"):
            state[key] = sum(r["state"][key] for r in ranks)
        state["seen"] = sorted(set().union(*(r["state"]["seen"] for r in ranks)))
        return {"state": state, "rng": ranks[0]["rng"]}
    state.update(loss_sum=0.0, correct=0, n=0, seconds=0.0, seen=[])
    return {"state": state, "rng": None}


# ----------------------------------------------------------------------------- DDP
def wrap(task: nn.Module, device: torch.device) -> nn.Module:
    """`task` in DistributedDataParallel when running with several ranks, else unchanged.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts from the
    same weights even if their initialisations differed."""
    if world_size() < 2:
        return task
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    ddp = DDP(task, device_ids=ids)
    ddp.trainable_at_wrap = _trainable(task)
    return ddp


def rewrap(task: nn.Module, device: torch.device) -> nn.Module:
    """A new DDP wrapper when parameters stopped requiring gradients since `wrap` (train.freeze_modules):
    DDP's reducer waits for a gradient of every parameter it was built with and cannot be told
    otherwise. A collective: every rank calls it at the same epoch's start."""
    if world_size() < 2 or task.trainable_at_wrap == _trainable(task.module):
        return task
    return wrap(task.module, device)


def _trainable(module: nn.Module) -> int:
    return sum(p.requires_grad for p in module.parameters())


def no_sync(task: nn.Module, skip: bool) -> ContextManager[Any]:
    """DDP's no_sync (no gradient all-reduce) for accumulation micro-batches that do not step."""
    return task.no_sync() if skip and hasattr(task, "no_sync") else nullcontext()


def average_gradients(params: list[nn.Parameter]) -> None:
    """All-reduce gradients by hand: used when an accumulation group ends on a micro-batch that every
    rank had to skip, so DDP's own sync (run on the last backward) never happened."""
    if world_size() < 2:
        return
    for p in params:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)
            p.grad.div_(world_size())


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm statistics over the global batch (train.sync_bn); CUDA only in PyTorch."""
    if world_size() < 2:
        return model
    if device.type != "cuda":
        log.warning("train.sync_bn needs CUDA (PyTorch's SyncBatchNorm); BatchNorm stays per rank on %s",
                    device.type)
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def local_device(device: torch.device) -> torch.device:
    """One GPU per local rank: "cuda" becomes cuda:LOCAL_RANK under torchrun."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", local_rank())
    return device


# ----------------------------------------------------------------------------- process group
def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise UserError(f"{TIMEOUT_ENV} must be > 0, got {raw!r}")
    return value


def _device_type(name: str | None) -> str:
    name = (name or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(name).type
    except RuntimeError:
        return "cpu"  # the engine's resolve_device reports the bad name


def _wait_reachable(host: str, port: int, seconds: float) -> str | None:
    """None once host:port accepts a TCP connection, else the last error after `seconds`.

    Checked in Python first because c10d's own connect failure prints C++ stack frames."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, seconds)):
                return None
        except OSError as e:
            if time.monotonic() >= deadline:
                return e.strerror or type(e).__name__
            time.sleep(0.5)


def setup(device_name: str | None = "auto") -> bool:
    """Join the process group torchrun describes in the environment.

    Returns True when this call initialised it (the caller then tears it down), False when not
    launched by torchrun or already initialised by the caller (e.g. a script of one's own)."""
    if is_distributed() or not launched_by_torchrun():
        return False
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise UserError(f"RANK/WORLD_SIZE are set but {', '.join(missing)} is not: launch with torchrun "
                        "(or set MASTER_ADDR and MASTER_PORT yourself)")
    kind = _device_type(device_name)
    if kind == "cuda":
        lr, n = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if lr >= n:
            raise UserError(f"local rank {lr} has no GPU ({n} visible): lower --nproc_per_node to {n}")
        torch.cuda.set_device(lr)
    backend = "nccl" if kind == "cuda" else "gloo"
    host, port = os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]
    where = f"{host}:{port}"
    hint = "check that every node reaches --rdzv-endpoint / MASTER_ADDR and that all ranks were started"
    # Rank 0 hosts the store unless torchrun's agent does; everyone else must reach it.
    if int(os.environ["RANK"]) != 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        try:
            error = _wait_reachable(host, int(port), timeout_s())
        except ValueError:
            raise UserError(f"MASTER_PORT must be a port number, got {port!r}") from None
        if error is not None:
            raise UserError(f"could not reach the rendezvous at {where} within {timeout_s():.0f}s ({error}); "
                            f"{hint} ({TIMEOUT_ENV} sets the wait)")
    try:
        torch.distributed.init_process_group(backend, timeout=timedelta(seconds=timeout_s()))
    except (RuntimeError, TimeoutError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"could not join the process group at {where} ({first}); {hint}") from None
    if rank() != 0:  # one copy of the log: rank 0's (warnings and errors from any rank still show)
        logging.getLogger("imagenette_lab").setLevel(logging.WARNING)
    log.info("distributed: %d processes (%s), this is rank %d", world_size(), backend, rank())
    return True


def check_same_config(cfg: dict[str, Any]) -> None:
    """Every rank must train the same config; a mismatch (different files/--set per node) fails on all."""
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()
    digests = all_gather_object(digest)
    odd = [r for r, d in enumerate(digests) if d != digests[0]]
    if odd:
        raise UserError(f"ranks {', '.join(map(str, odd))} were started with a config different from rank 0's; "
                        "give every node the same --config and --set options")


def _lost_peer(e: BaseException) -> str | None:
    text = str(e)
    low = text.lower()
    keys = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout", "gloo", "nccl")
    if isinstance(e, getattr(torch.distributed, "DistError", ())) or any(k in low for k in keys):
        first = re.sub(r"^\[[^\]]*\]\s*", "", (text.strip().splitlines() or [type(e).__name__])[0])[:160]
        return (f"rank {rank()} lost contact with the other processes ({first}); another rank probably "
                f"died or hung -- see its output (timeout {timeout_s():.0f}s, set {TIMEOUT_ENV} to change)")
    return None


def launched(fn: Callable) -> Callable:
    """Decorate `fn(cfg, ...)`: run it inside torchrun's process group when launched by torchrun."""

    @functools.wraps(fn)
    def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        owned = setup(cfg.train.device)
        try:
            if is_distributed():
                check_same_config(cfg.to_dict())
            return fn(cfg, *args, **kwargs)
        except RuntimeError as e:
            message = _lost_peer(e) if is_distributed() else None
            if message is None:
                raise
            raise UserError(message) from None
        finally:
            if owned and is_distributed():
                torch.distributed.destroy_process_group()

    return wrapper
