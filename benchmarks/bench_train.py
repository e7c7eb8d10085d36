"""Benchmark: training img/s, EfficientNet-B0 from scratch at 128 px, batch 64 -- tutorial baseline vs ours.

baseline  the tutorial pipeline: torchvision.datasets.ImageFolder + PIL RandomResizedCrop/flip per
          sample, DataLoader(num_workers=2), fp32, NCHW, eager, torch.optim.AdamW (default impl.)
ours      imagenette-lab's path: uint8 tensor cache (data.cache) with batched crop/flip, workers=0,
          channels_last, `train.amp: auto` (bf16 only on CPUs with AMX/AVX512-BF16 where a timing probe
          finds it faster for this model), fused AdamW,
          the engine's own train_epoch loop; `ours_compile` adds torch.compile (train.compile);
          ablations: `ours_fp32` (no autocast), `ours_bf16` (bf16 autocast forced), `ours_folder` (PIL
          decoding, 2 workers, no cache), `ours_noreuse` (glibc's default heap: engine/fast.py)

Both train the same initial weights on the same images in the same order with the same optimizer
settings and LR schedule for the same number of steps; each variant runs in its own process (so
peak RSS is its own). Throughput: `--warmup` steps discarded, then the timed steps split into
`--repeats` chunks, median img/s. Then both models are evaluated the same way (fp32, eval
transform from the files) on the val split: a speed-up that costs accuracy does not count.

    python benchmarks/bench_train.py --quick                    # seconds: checks the script works
    python benchmarks/bench_train.py                            # the measurement (see benchmarks/README.md)
    python benchmarks/bench_train.py --variants baseline ours ours_compile --steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "imagenette2-224"
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))  # tests.helpers (generated data) when run from anywhere

from benchmarks.common import RssPeaks, cpu_info, peak_rss_mib, write_result  # noqa: E402


def _index_order(root: Path, steps: int, batch: int, seed: int) -> list[int]:
    import torch

    from imagenette_lab.data.dataset import index_split

    n = len(index_split(root, "train"))
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * batch:
        order += torch.randperm(n, generator=g).tolist()
    return order[: steps * batch]


def run_variant(args: argparse.Namespace) -> dict:
    import torch
    from torch.nn import functional as F

    from imagenette_lab.config import OptimConfig
    from imagenette_lab.data.dataset import index_split
    from imagenette_lab.data.sources import make_dataset
    from imagenette_lab.data.tensor_cache import cache_size_for
    from imagenette_lab.data.transforms import default_data_cfg, eval_transform, train_transform
    from imagenette_lab.engine.evaluate import amp_dtype, make_loader, run_inference
    from imagenette_lab.engine.fast import compiled, reuse_freed_memory
    from imagenette_lab.engine.loop import EpochState, StepContext, StopRequest, train_epoch
    from imagenette_lab.engine.optim import build_optimizer, build_scheduler
    from imagenette_lab.engine.task import TrainTask
    from imagenette_lab.models.factory import create_classifier
    from imagenette_lab.utils import seed_everything

    root, variant, bs, size = Path(args.root), args.variant, args.batch_size, args.img_size
    order = _index_order(root, args.warmup + args.steps, bs, args.seed)
    index = index_split(root, "train")
    classes = index.classes
    seed_everything(args.seed)
    model = create_classifier("efficientnet_b0", len(classes), pretrained=False, head="linear", dropout=0.2)
    ocfg = OptimConfig(lr=3e-3, weight_decay=0.05, warmup_epochs=0.1)  # one "epoch" = the whole run
    total_steps = args.warmup + args.steps
    stamps: list[float] = []
    info: dict = {"variant": variant}
    rss = RssPeaks().start()  # until after the evaluation below
    t_setup = time.perf_counter()
    if variant == "baseline":
        import torchvision
        from torchvision import transforms as T

        tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        ds = torchvision.datasets.ImageFolder(str(root / "train"), tf)
        assert ds.classes == classes and len(ds) == len(index), "torchvision and our index differ"
        loader = torch.utils.data.DataLoader(ds, batch_size=bs, sampler=order, num_workers=2, drop_last=True)
        opt = torch.optim.AdamW([p for p in model.parameters()], lr=ocfg.lr, weight_decay=ocfg.weight_decay)
        sched = build_scheduler(opt, ocfg, ocfg.lr, 1, total_steps)
        model.train()
        stamps.append(time.perf_counter())
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            stamps.append(time.perf_counter())
        info["setup_s"] = round(stamps[0] - t_setup, 2)
    else:
        # Ablations: ours_fp32 = no autocast, ours_folder = PIL decoding with 2 workers instead of the cache.
        amp = {"ours_fp32": "off", "ours_bf16": "bf16"}.get(variant, args.amp)
        info["reuse_freed_memory"] = variant != "ours_noreuse" and reuse_freed_memory()  # as `train` does on a CPU
        dc = default_data_cfg(size)
        tf = train_transform(dc, "baseline", 0.08)  # the baseline's RandomResizedCrop scale
        if variant == "ours_folder":
            ds, workers = make_dataset(index, tf), 2
        else:
            cache_size = cache_size_for(size)
            t0 = time.perf_counter()
            ds = make_dataset(index, tf, source="cache", size=cache_size, seed=args.seed, workers=2)
            val_cache = make_dataset(index_split(root, "val", classes=classes), None, source="cache",
                                     size=cache_size)
            info["cache_ready_s"] = round(time.perf_counter() - t0, 2)
            info["cache_bytes"] = ds.cache.nbytes_on_disk() + val_cache.cache.nbytes_on_disk()
            info["cache_images"] = ds.cache.manifest["n"] + val_cache.cache.manifest["n"]
            ds.set_epoch(1)
            workers = args.workers
        loader = make_loader(ds, bs, workers, sampler=order, drop_last=True, seed=args.seed)
        model.to(memory_format=torch.channels_last)
        opt = build_optimizer(model, ocfg, ocfg.lr)
        sched = build_scheduler(opt, ocfg, ocfg.lr, 1, total_steps)
        dev = torch.device("cpu")
        if amp == "auto":  # as `train` does: bf16 only where the CPU has it natively AND it times faster
            from imagenette_lab.engine.precision import probe_train_amp

            amp, info["amp_reason"] = probe_train_amp(model, "efficientnet_b0", (bs, 3, size, size), True)
        task = TrainTask(compiled(model, variant == "ours_compile"), amp=amp, device=dev, label_smoothing=0.1)
        ctx = StepContext(model, opt, sched, torch.amp.GradScaler("cpu", enabled=False), dev,
                          task, amp=amp, channels_last=True,
                          label_smoothing=0.1, on_step_end=lambda _: stamps.append(time.perf_counter()))
        info["amp_dtype"] = str(amp_dtype(dev, amp))
        info["optimizer"] = {k: opt.defaults.get(k) for k in ("fused", "foreach")}
        stamps.append(time.perf_counter())
        with StopRequest() as stop:
            train_epoch(ctx, loader, EpochState(), stop, epoch=1, desc=variant)
        info["setup_s"] = round(stamps[0] - t_setup, 2)
    steps = [b - a for a, b in zip(stamps, stamps[1:])][args.warmup:]
    chunks = [steps[i::args.repeats] for i in range(args.repeats)]  # interleaved: drift hits all alike
    rates = [bs * len(c) / sum(c) for c in chunks if c]
    info.update(steps_timed=len(steps), warmup=args.warmup, img_per_s=statistics.median(rates),
                img_per_s_repeats=[round(r, 2) for r in rates], first_step_s=round(stamps[1] - stamps[0], 2),
                train_s=round(stamps[-1] - stamps[0], 2))
    # The same evaluation for both: fp32, eval transform on the files.
    val = index_split(root, "val", classes=classes).subset(args.val_per_class, 0)
    vloader = make_loader(make_dataset(val, eval_transform(default_data_cfg(size))), 64, 2)
    res = run_inference(model, vloader, device="cpu", amp="off", channels_last=False, desc="val")
    info["val_accuracy"] = float((res.outputs.argmax(1) == res.labels).float().mean())
    info["val_n"] = res.n
    info["peak_rss_split_mib"] = rss.stop()  # heap vs file pages (libraries, the memory-mapped cache)
    info["peak_rss_mib"] = peak_rss_mib()  # this process, during training and eval
    info["peak_rss_children_mib"] = peak_rss_mib(children=True)  # largest loader worker, an upper bound (utils)
    return info


def _run_one(v: str, args: argparse.Namespace) -> dict:
    """One variant in its own process (its own peak RSS, no state shared with the others)."""
    cmd = [sys.executable, __file__, "--variant", v] + [a for a in sys.argv[1:] if a != "--quick"] + [
        "--root", args.root, "--steps", str(args.steps), "--warmup", str(args.warmup), "--repeats",
        str(args.repeats), "--batch-size", str(args.batch_size), "--val-per-class", str(args.val_per_class)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        sys.exit(f"variant {v} failed:\n{out.stderr[-3000:]}")
    r = json.loads(line[7:])
    r["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"  {v}: {r['img_per_s']:.1f} img/s, val acc {r['val_accuracy']:.4f}", flush=True)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=None, help=f"dataset root (default: {REAL} if present, else generated)")
    p.add_argument("--variants", nargs="+", default=["baseline", "ours"],
                   choices=["baseline", "ours", "ours_compile", "ours_fp32", "ours_bf16", "ours_folder",
                            "ours_noreuse"],
                   help="ours_fp32 / ours_bf16 / ours_folder / ours_noreuse: ours without autocast / with bf16 "
                   "forced / without the tensor cache / with glibc's default heap (ablations)")
    p.add_argument("--steps", type=int, default=300, help="timed optimizer steps per variant")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (also trained)")
    p.add_argument("--repeats", type=int, default=5, help="chunks of the timed steps; the median is reported")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the variants this many times, alternating (a shared machine drifts); each "
                        "variant reports its median round")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=0, help="our loader's workers (the baseline uses 2)")
    p.add_argument("--amp", default="auto", help="our autocast mode (auto = engine.evaluate.amp_dtype)")
    p.add_argument("--val-per-class", type=int, default=0, help="0 = the whole val split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a few small steps: checks the script, numbers mean little")
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON result")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant, print its JSON
    args = p.parse_args()
    if args.quick:
        args.steps, args.warmup, args.repeats, args.batch_size = 4, 1, 2, 16
        args.val_per_class = args.val_per_class or 3
    if args.root is None:
        if REAL.exists():
            args.root = str(REAL)
        else:
            from tests.helpers import make_dataset

            args.root = str(make_dataset(Path(tempfile.mkdtemp(prefix="bench_train_")) / "data",
                                         {"train": 40, "val": 10}, size=160, bad_files=False))
            print(f"no real data: generated {args.root}")
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args)))
        return
    rounds: dict[str, list[dict]] = {v: [] for v in args.variants}
    for _ in range(args.rounds):
        for v in args.variants:
            rounds[v].append(_run_one(v, args))
    results = {}
    for v, runs in rounds.items():
        r = results[v] = sorted(runs, key=lambda r: r["img_per_s"])[len(runs) // 2]
        r["img_per_s_rounds"] = [x["img_per_s"] for x in runs]
        print(f"{v:13s} {r['img_per_s']:8.1f} img/s (rounds {r['img_per_s_rounds']}, repeats "
              f"{r['img_per_s_repeats']})  val acc {r['val_accuracy']:.4f} on {r['val_n']}  peak RSS "
              f"{r['peak_rss_mib']:.0f} MiB (heap {r['peak_rss_split_mib'].get('RssAnon', '?')}, files "
              f"{r['peak_rss_split_mib'].get('RssFile', '?')}; largest child {r['peak_rss_children_mib']:.0f}, "
              "its pages shared with the parent included)"
              + (f"  cache {r['cache_bytes'] / 2**20:.0f} MiB ({r['cache_images']} images, ready in "
                 f"{r['cache_ready_s']}s)" if "cache_bytes" in r else ""), flush=True)
    base = results.get("baseline")
    summary = {}
    if base:
        for v, r in results.items():
            if v != "baseline":
                summary[v] = {"speedup": round(r["img_per_s"] / base["img_per_s"], 2),
                              "val_accuracy_delta": round(r["val_accuracy"] - base["val_accuracy"], 4)}
                print(f"{v} vs baseline: {summary[v]['speedup']:.2f}x img/s (goal >= 3x), val accuracy "
                      f"{r['val_accuracy']:.4f} vs {base['val_accuracy']:.4f} after the same "
                      f"{args.warmup + args.steps} steps")
    path = write_result(args.out, "bench_train", {"args": vars(args), "cpu": cpu_info(), "results": results,
                                                  "vs_baseline": summary})
    print(f"details: {path}")


if __name__ == "__main__":
    main()
