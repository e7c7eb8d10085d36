"""Benchmark: Exp3 (frozen base + study head) trained with and without the feature cache.

Both runs use the same config, seed, data subset and epochs; only `train.feature_cache` differs.
Without the cache every epoch pushes every image through the frozen base; with it the base runs
once per image (per view) and the epochs only touch the head. Prints both wall times, the speed-up
measured in this run, and both validation accuracies (equal within noise: dropout draws and bf16
vs fp32 in the head differ). Not a test.

    python benchmarks/bench_feature_cache.py                       # real data if present, else generated
    python benchmarks/bench_feature_cache.py --per-class 50 --epochs 5 --model efficientnet_lite0
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "imagenette2-224"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=None, help=f"dataset root (default: {REAL} if present, else generated)")
    p.add_argument("--model", default="efficientnet_lite0", help="frozen ImageNet backbone (offline: efficientnet_lite0)")
    p.add_argument("--per-class", type=int, default=30, help="train images per class (seeded subset)")
    p.add_argument("--val-per-class", type=int, default=20, help="val images per class")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--views", type=int, default=1, help="cached views per train image")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=None, help="run folder (default: a temp dir)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    from imagenette_lab.config import load_config
    from imagenette_lab.engine.train import train

    out = Path(args.out or tempfile.mkdtemp(prefix="bench_cache_"))
    root = Path(args.root) if args.root else REAL
    pretrained = True
    if not root.exists():
        from tests.helpers import make_dataset

        root = make_dataset(out / "data", {"train": args.per_class, "val": args.val_per_class}, size=64,
                            bad_files=False)
        print(f"no real data: generated {root}")
    # Eval views only (augment none, 1 view): the cached and uncached runs then see the same inputs.
    common = [f"model.name={args.model}", f"model.pretrained={pretrained}", f"data.img_size={args.img_size}",
              f"data.limit_per_class={args.per_class}", f"data.val_limit_per_class={args.val_per_class}",
              f"data.workers={args.workers}", f"train.epochs={args.epochs}", f"train.cache_views={args.views}",
              "data.augment=none" if args.views == 1 else "data.augment=baseline", "train.finetune_epochs=0"]
    results = {}
    for cached in (True, False):
        name = "cache" if cached else "no_cache"
        cfg = load_config("exp3_transfer_cpu", common + [f"train.feature_cache={cached}"],
                          extra={"name": name, "out_dir": str(out), "data": {"root": str(root)}})
        t0 = time.perf_counter()
        meta = train(cfg, overwrite=True)  # as before: a rerun into the same --out replaces the run
        wall = time.perf_counter() - t0
        results[name] = {"wall_s": round(wall, 1), "val_accuracy": meta["metrics"]["accuracy"],
                         "macro_f1": meta["metrics"]["macro_f1"], "feature_s": meta["feature_seconds"],
                         "epochs_s": meta["train_seconds"], "probe": (meta.get("probe") or {}).get("val_accuracy")}
        print(f"{name:9s} wall {wall:7.1f}s  (features {meta['feature_seconds']:.1f}s, epochs "
              f"{meta['train_seconds']:.1f}s)  val acc {meta['metrics']['accuracy']:.4f}  "
              f"macro F1 {meta['metrics']['macro_f1']:.4f}", flush=True)
    c, n = results["cache"], results["no_cache"]
    print(f"\n{args.model} frozen, {args.per_class}/class train, {args.val_per_class}/class val, "
          f"{args.epochs} epochs @ {args.img_size}px, {args.views} view(s)")
    print(f"speed-up (wall, incl. final eval): {n['wall_s'] / c['wall_s']:.2f}x   "
          f"(epochs+features only: {(n['epochs_s'] + n['feature_s']) / (c['epochs_s'] + c['feature_s']):.2f}x)")
    print(f"val accuracy: cache {c['val_accuracy']:.4f} vs no cache {n['val_accuracy']:.4f} "
          f"(probe {c['probe']})")
    (out / "bench_feature_cache.json").write_text(json.dumps({"args": vars(args), **results}, indent=2))
    print(f"details: {out / 'bench_feature_cache.json'}")


if __name__ == "__main__":
    main()
