"""Run under torchrun by test_ddp.py: scenarios that need several ranks inside one launch.

    python -m torch.distributed.run --standalone --nproc_per_node=2 worker.py MODE DATA OUT

scenarios: configs differing across ranks; a SIGTERM on rank 1 only (all ranks must stop at the
same step, rank 0 saves) and its resume under DDP, against an uninterrupted DDP run; OUT/single
(a one-process run stopped after epoch 1 of 2, made by the test) finished under DDP.
sigkill: rank 1 SIGKILLs itself mid-epoch (torchrun must stop rank 0 too).
Each rank writes what it saw to OUT/rank<r>.json.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import torch

from imagenette_lab.config import load_config
from imagenette_lab.engine.train import resume_config, train
from imagenette_lab.errors import UserError

# Per-rank batch 4 over 24 images: 3 micro-batches per rank and epoch, so with grad_accum=2 each
# epoch ends with a one-micro-batch accumulation tail; augmentation + dropout use per-rank RNG.
SETTINGS = ["model.name=test_efficientnet_gn", "data.img_size=16", "data.batch_size=4", "data.workers=0",
            "train.amp=off", "data.augment=baseline", "model.dropout=0.3", "optim.grad_accum=2",
            "train.epochs=2"]


def cfg(data: str, out: str, name: str, extra: list[str] = ()):
    return load_config("exp2_scratch_cpu", SETTINGS + list(extra),
                       extra={"name": name, "out_dir": out, "data": {"root": data}})


def main() -> None:
    mode, data, out = sys.argv[1:4]
    torch.distributed.init_process_group("gloo")  # ours: train() joins it rather than owning it
    rank = torch.distributed.get_rank()
    seen: dict = {}

    def kill_at(sig: int, step: int):
        def hook(info: dict) -> None:
            if rank == 1 and info["epoch"] == 1 and info["step"] == step:
                os.kill(os.getpid(), sig)
        return {"on_step_end": hook}

    if mode == "scenarios":
        try:  # a different seed on rank 1 only
            train(cfg(data, out, "mismatch", [f"seed={rank}"]))
            seen["mismatch"] = "no error"
        except UserError as e:
            seen["mismatch"] = str(e)
        seen["ref"] = train(cfg(data, out, "ref"))["status"]
        r = train(cfg(data, out, "stop"), hooks=kill_at(signal.SIGTERM, 2))
        seen["stop"] = {"status": r["status"], "exit_code": r["exit_code"]}
        run = Path(out) / "stop"
        if rank == 0:  # kept for the test: resuming replaces it
            shutil.copy(run / "checkpoints" / "last.pt", Path(out) / "interrupted.pt")
        seen["resume"] = train(resume_config(run), resume=run)["status"]
        single = Path(out) / "single"  # stopped after epoch 1 of 2 in one process: finish it under DDP
        seen["single"] = train(resume_config(single), resume=single)["status"]
    elif mode == "sigkill":
        train(cfg(data, out, "killed"), hooks=kill_at(signal.SIGKILL, 2))
    Path(out, f"rank{rank}.json").write_text(json.dumps(seen))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
