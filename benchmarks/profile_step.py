"""Profile: where one training step of EfficientNet-B0 from scratch spends its time (no data loading).

The step is `TrainTask` (bf16 autocast with fp32 depthwise convs, or fp32) + train's AdamW on random
channels_last tensors, as `train` runs it on a CPU. Prints img/s of `--rounds` timed chunks and the
`torch.profiler` table of the ops with the most self time; `--compile` runs the model torch.compile'd.
A diagnostic for benchmarks/README.md ("where a step's time goes"), not a ratio benchmark.

    python benchmarks/profile_step.py                    # bf16, eager: ~1 min on 2 cores
    python benchmarks/profile_step.py --compile          # + ~2 min of compilation
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_info  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amp", choices=("bf16", "off"), default="bf16")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="steps per timed round and in the profile")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from imagenette_lab.config import OptimConfig
    from imagenette_lab.engine.fast import compiled, reuse_freed_memory
    from imagenette_lab.engine.optim import build_optimizer
    from imagenette_lab.engine.task import TrainTask
    from imagenette_lab.models.factory import create_classifier

    reuse_freed_memory()  # as `train` does on a CPU
    torch.manual_seed(0)
    model = create_classifier("efficientnet_b0", 10, head="linear", dropout=0.2)
    model.to(memory_format=torch.channels_last).train()
    opt = build_optimizer(model, OptimConfig())  # train's AdamW (fused where it can be)
    task = TrainTask(compiled(model, args.compile), amp=args.amp, device="cpu", label_smoothing=0.1)
    bs, size = args.batch_size, args.img_size
    x = torch.randn(bs, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,))

    def step() -> None:
        loss, _ = task(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    print(f"cpu: {cpu_info()}")
    t = time.perf_counter()
    step()
    print(f"first step: {time.perf_counter() - t:.1f} s (compilation included when --compile)")
    step()
    for r in range(args.rounds):
        t = time.perf_counter()
        for _ in range(args.steps):
            step()
        print(f"round {r + 1}: {bs * args.steps / (time.perf_counter() - t):.1f} img/s", flush=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
