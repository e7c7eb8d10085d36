"""img/s of `predict` (the Predictions fast path: bf16 autocast, channels_last, workers) against the
old per-file loop (fp32, NCHW, decoding in the main process), on the same images in the same run.

    python benchmarks/bench_predict.py --root ../shared/data/imagenette2-224/val --n 100
    python benchmarks/bench_predict.py --quick      # 16 images, a correctness check of the script

The old loop is reproduced here (it was removed from predict.py) so the ratio is measured, not remembered.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch


def old_loop(predictor, files, batch_size: int) -> int:
    from imagenette_lab.data.dataset import load_rgb
    from imagenette_lab.data.transforms import eval_transform

    transform = eval_transform(predictor.data_cfg)
    size = int(predictor.data_cfg["input_size"][-1])
    draft = int(math.floor(size / float(predictor.data_cfg.get("crop_pct", 0.875))))
    n = 0
    with torch.inference_mode():
        for i in range(0, len(files), batch_size):
            x = torch.stack([transform(load_rgb(p, draft)) for p in files[i : i + batch_size]])
            torch.softmax(predictor.model(x).float(), dim=1)
            n += len(x)
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared/data/imagenette2-224/val"))
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    from imagenette_lab.predict import iter_files, load_predictor, predict

    n = 16 if args.quick else args.n
    all_files = sorted(iter_files([args.root]))
    files = [all_files[round(i * len(all_files) / n)] for i in range(min(n, len(all_files)))]  # every class
    predictor = load_predictor(args.model)
    old_loop(predictor, files[:4], args.batch_size)  # warm-up (allocations, lazy init)
    predict(predictor, files[:4], batch_size=args.batch_size, workers=0)
    t0 = time.perf_counter()
    n_old = old_loop(predictor, files, args.batch_size)
    old = n_old / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    results, _ = predict(predictor, files, batch_size=args.batch_size, workers=args.workers)
    new = len(results) / (time.perf_counter() - t0)
    print(f"{len(files)} images, {args.model}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"old per-file loop (fp32, NCHW, no workers): {old:.1f} img/s")
    print(f"predict via Predictions (amp auto, channels_last, {args.workers} workers): {new:.1f} img/s")
    print(f"ratio new/old: {new / old:.2f}x")


if __name__ == "__main__":
    main()
