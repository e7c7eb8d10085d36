"""Benchmark: the same training as 1 process and as N torchrun processes (DDP), side by side.

Both runs use the same recipe, seed, data subset, epochs and *global* batch (the N-process run gets
batch/N per process), so their metrics should agree within run-to-run noise; the table shows val
accuracy/F1/val count and wall times, and the speed ratio measured in this run. On a CPU the N
processes share the cores (each gets cores/N threads), so the gain comes from parallel data loading
and, for exp3, sharded feature extraction. Not a test.

    python benchmarks/bench_ddp.py --quick                          # generated data, seconds
    python benchmarks/bench_ddp.py --recipe exp2 --nproc 2          # ../shared/data/imagenette2-224
    python benchmarks/bench_ddp.py --recipe exp3 --nproc 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "imagenette2-224"
RECIPES = {
    # EfficientNet-B0 from scratch, small and short; workers=0 so each rank is exactly one process.
    "exp2": ("exp2_scratch_cpu", ["data.img_size=96", "data.limit_per_class=100", "data.val_limit_per_class=50",
                                  "train.epochs=3", "data.workers=0"], 64),
    # Frozen Lite0 + study head on cached features: extraction (sharded under DDP) dominates.
    "exp3": ("exp3_transfer_cpu", ["data.limit_per_class=100", "data.val_limit_per_class=50",
                                   "train.cache_views=1", "train.epochs=5", "data.workers=0"], 64),
}
QUICK = ["model.name=test_efficientnet_gn", "data.img_size=32", "train.epochs=2", "data.workers=0",
         "train.amp=off", "data.augment=none", "model.dropout=0"]


def run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", choices=sorted(RECIPES), default="exp2")
    p.add_argument("--nproc", type=int, default=2, help="torchrun processes for the second run")
    p.add_argument("--root", default=None, help=f"dataset root (default: {REAL})")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="CPU threads to share out")
    p.add_argument("--quick", action="store_true", help="a tiny generated dataset and model (seconds)")
    p.add_argument("--out", default=None, help="run folder (default: a temp dir)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_ddp_"))
    recipe, sets, batch = RECIPES[args.recipe]
    root = Path(args.root) if args.root else REAL
    if args.quick:
        from imagenette_lab.data.synthetic import make_synthetic_dataset

        recipe, sets, batch = "exp2_scratch_cpu", QUICK, 8
        root = out / "data"
        make_synthetic_dataset(root, {"train": 16, "val": 5}, size=32)
    elif not root.exists():
        sys.exit(f"{root} not found: pass --root or use --quick")
    if batch % args.nproc:
        sys.exit(f"--nproc {args.nproc} must divide the global batch {batch}")
    base = ["-m", "imagenette_lab", "train", "--config", recipe, "--root", str(root), "--out", str(out),
            "--overwrite"] + [a for s in sets for a in ("--set", s)]
    seconds = {
        "1 process": run([sys.executable, *base, "--name", "one", "--set", f"data.batch_size={batch}"],
                         args.cores),
        f"{args.nproc} processes": run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
             *base, "--name", "ddp", "--set", f"data.batch_size={batch // args.nproc}"],
            max(args.cores // args.nproc, 1)),
    }
    print(f"{recipe} {' '.join(sets)}; global batch {batch}; data {root}")
    print(f"{'run':<14}{'val acc':>9}{'macro F1':>10}{'val n':>7}{'train s':>9}{'wall s':>8}")
    for (label, wall), name in zip(seconds.items(), ("one", "ddp")):
        meta = json.loads((out / name / "run.json").read_text())
        hist = [json.loads(line) for line in (out / name / "history.jsonl").read_text().splitlines()]
        m = meta["metrics"]
        print(f"{label:<14}{m['accuracy']:>9.4f}{m['macro_f1']:>10.4f}{hist[-1]['val_n']:>7}"
              f"{meta['train_seconds'] + meta['feature_seconds']:>9.1f}{wall:>8.1f}")
    one, many = seconds.values()
    print(f"wall-time speed-up of {args.nproc} processes: {one / many:.2f}x (runs in {out})")


if __name__ == "__main__":
    main()
