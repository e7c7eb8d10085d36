"""Benchmark: our training img/s beside timm's reference training loop, measured in the same run.

Both train EfficientNet-B0 from scratch (10 classes) at 128 px, batch 64, on the SAME images (a
seeded subset of <root>/train) with the same number of DataLoader workers:

- ours: `imagenette_lab.engine.train.train` with the `exp2_scratch_cpu` recipe (AdamW, channels_last,
  `train.amp: auto` -> bf16 only where the CPU has native bf16 and a timing probe finds it faster)
  on our fast data path, `data.cache=true data.workers=0` (the uint8 tensor cache, built once
  before training and not timed; batched crops in-process) -- `--set` changes or adds overrides;
  img/s is the engine's own per-epoch training throughput (validation and checkpoints excluded).
- peer: timm's `train.py` defaults in a plain loop: `timm.create_model`, fp32, NCHW, eager (no AMP,
  no channels_last, no compile), timm's training transform (random-resized-crop, flip, colour
  jitter 0.4), SGD momentum 0.9 with timm's lr scaling and weight decay, label smoothing 0.1, a
  torch DataLoader with persistent workers (timm's loader default).

Each side runs one warm-up epoch, then `--repeats` timed epochs of `--steps` batches; the median is
reported. Prints both, the ratio (goal: ours >= 1.5x the peer) and writes a JSON with the CPU flags
to benchmarks/results/. Speed numbers only mean something on an otherwise idle machine. Not a test.

    python benchmarks/bench_vs_timm.py --quick                 # tiny: checks that it runs (~1 min)
    python benchmarks/bench_vs_timm.py                         # 20 steps x 3 repeats (~5-8 min on 2 cores)
    python benchmarks/bench_vs_timm.py --root ../shared/data/imagenette2-224 --steps 30 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "imagenette2-224"
RESULTS = REPO / "benchmarks" / "results"
FLAGS_OF_INTEREST = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx512_fp16", "avx2", "fma", "bf16")


def cpu_info() -> dict:
    import os

    from imagenette_lab.engine.precision import cpu_flags, cpu_name, cpu_precision

    flags = cpu_flags()
    return {"model": cpu_name(), "cores": os.cpu_count(), "flags": [f for f in FLAGS_OF_INTEREST if f in flags],
            "auto_precision": cpu_precision().label, "auto_precision_reason": cpu_precision().reason}


class PathDataset:
    """(path, label) pairs loaded with PIL and timm's transform: what a plain timm loop reads."""

    def __init__(self, samples, transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as im:
            return self.transform(im.convert("RGB")), label


def run_peer(index, args, epochs: int) -> list[float]:
    """timm's reference loop; img/s per epoch."""
    import timm
    import torch
    from timm.data import create_transform, resolve_data_config
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2

    torch.manual_seed(0)
    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=len(index.classes))
    cfg = resolve_data_config({}, model=model)
    transform = create_transform((3, args.img_size, args.img_size), is_training=True, color_jitter=0.4,
                                 interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"])
    ds = PathDataset([(s.path, s.label) for s in index.samples], transform)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         persistent_workers=args.workers > 0, drop_last=False)
    # timm train.py: --opt sgd, lr = lr_base 0.1 * batch / 256, momentum 0.9, weight decay 2e-5, smoothing 0.1.
    opt = create_optimizer_v2(model, "sgd", lr=0.1 * args.batch_size / 256, weight_decay=2e-5, momentum=0.9)
    loss_fn = LabelSmoothingCrossEntropy(smoothing=0.1)
    model.train()
    rates = []
    for _ in range(epochs):
        n, t0 = 0, time.perf_counter()
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(y)
        rates.append(n / (time.perf_counter() - t0))
        print(f"  peer epoch: {rates[-1]:.1f} img/s", flush=True)
    return rates


def run_ours(root: Path, per_class: int, args, epochs: int, out: Path) -> tuple[list[float], str]:
    from imagenette_lab.config import load_config
    from imagenette_lab.engine.train import train

    cfg = load_config("exp2_scratch_cpu", [
        f"data.img_size={args.img_size}", f"data.batch_size={args.batch_size}", f"data.workers={args.workers}",
        f"data.limit_per_class={per_class}", "data.val_limit_per_class=2", f"train.epochs={epochs}",
        f"train.eval_every={epochs}", "train.checkpoints_keep=last", "model.pretrained=false", *args.set,
    ], extra={"name": "ours", "out_dir": str(out), "data": {"root": str(root)}})
    lines: list[str] = []  # the engine's own "precision: ..." line: what it chose and why

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("precision:"):
                lines.append(record.getMessage())

    grab, engine_log = Grab(), logging.getLogger("imagenette_lab.engine.train")
    engine_log.addHandler(grab)
    old_level = engine_log.level
    engine_log.setLevel(logging.INFO)
    try:
        meta = train(cfg)
    finally:
        engine_log.removeHandler(grab)
        engine_log.setLevel(old_level)
    precision = lines[0] if lines else "precision: (not logged)"
    hist = [json.loads(line) for line in (Path(meta["run_dir"]) / "history.jsonl").read_text().splitlines()]
    rates = [float(r["images_per_s"]) for r in hist]
    for r in rates:
        print(f"  ours epoch: {r:.1f} img/s", flush=True)
    return rates, precision


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=None, help=f"dataset root with train/ and val/ (default: {REAL})")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="batches per timed epoch")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per side (median reported)")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="overrides of our recipe (default: data.cache=true data.workers=0, the fast data path; "
                        "pass --set data.cache=false for the folder source with --workers processes)")
    p.add_argument("--quick", action="store_true",
                   help="2 steps of 16 images at 64 px x 1 repeat: a check that it runs, not a measurement")
    p.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/bench_vs_timm-<time>.json)")
    args = p.parse_args()
    args.set = ["data.cache=true", "data.workers=0"] + (args.set or [])
    if args.quick:
        args.steps, args.repeats, args.batch_size, args.img_size = 2, 1, 16, 64
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench_vs_timm_") as work:  # its run dir and any generated data
        return measure(args, Path(work))


def measure(args: argparse.Namespace, work: Path) -> int:
    """Both loops on the same images: prints the ratio, writes the JSON."""
    from imagenette_lab.data.dataset import index_split

    root = Path(args.root) if args.root else REAL
    if not root.exists():
        if not args.quick:
            print(f"error: {root} not found; pass --root DIR (the real photographs) or use --quick", file=sys.stderr)
            return 1
        from imagenette_lab.data.synthetic import make_synthetic_dataset

        root = make_synthetic_dataset(work / "data", {"train": 40, "val": 2}, size=160)
        print(f"no real data: generated {root} (numbers are meaningless)")
    classes = len(index_split(root, "train").classes)
    # The same seeded subset on both sides: steps * batch images per epoch.
    per_class = math.ceil(args.steps * args.batch_size / classes)
    index = index_split(root, "train").subset(per_class, seed=0)
    epochs = 1 + args.repeats
    import torch

    print(f"{len(index)} train images ({per_class}/class) from {root}, {args.img_size} px, batch "
          f"{args.batch_size}, {args.workers} workers, {torch.get_num_threads()} threads; "
          f"1 warm-up + {args.repeats} timed epoch(s) per side", flush=True)
    ours, precision = run_ours(root, per_class, args, epochs, work)
    peer = run_peer(index, args, epochs)
    ours_med, peer_med = statistics.median(ours[1:]), statistics.median(peer[1:])
    ratio = ours_med / peer_med if peer_med else float("nan")
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": cpu_info(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "settings": {"model": "efficientnet_b0", "img_size": args.img_size, "batch_size": args.batch_size,
                     "workers": args.workers, "steps": args.steps, "repeats": args.repeats, "quick": args.quick,
                     "images_per_epoch": len(index), "root": str(root)},
        "ours": {"recipe": "exp2_scratch_cpu", "overrides": args.set, "precision": precision, "images_per_s": ours,
                 "median_images_per_s": ours_med},
        "peer": {"loop": "timm reference: fp32 NCHW eager, SGD, timm train transform",
                 "timm": __import__("timm").__version__, "images_per_s": peer, "median_images_per_s": peer_med},
        "ratio": ratio, "goal": 1.5, "meets_goal": ratio >= 1.5,
    }
    out = Path(args.out) if args.out else RESULTS / f"bench_vs_timm-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nours: {ours_med:.1f} img/s ({precision})")
    print(f"timm reference loop: {peer_med:.1f} img/s (fp32 NCHW eager)")
    print(f"ratio: {ratio:.2f}x (goal >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'})"
          + ("  [--quick: not a measurement]" if args.quick else ""))
    print(f"CPU: {result['cpu']['model']}; flags {', '.join(result['cpu']['flags'])}")
    print(f"details: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
