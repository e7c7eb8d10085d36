"""Benchmark + acceptance check: a trained checkpoint exported to ONNX, PyTorch vs onnxruntime on a val split.

Exports CHECKPOINT (a `train` run directory or .pt) to ONNX with the parity check on every image of
ROOT/val, then classifies the same folder with `predict` through both backends. Prints the max
|logit diff|, top-1 agreement, both val accuracies (must be equal: the same images right and wrong)
and both backends' img/s (model forward, same thread count) with their ratio, all measured in this
run. Exits 1 if the accuracies or any prediction differ. Not a test.

    python benchmarks/bench_onnx.py RUN_DIR --root ../shared/data/imagenette2-224
    python benchmarks/bench_onnx.py --quick          # trains a tiny model on generated data (seconds)
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", help="train run directory or .pt checkpoint")
    p.add_argument("--root", default=None, help="dataset root holding val/<class>/ (required unless --quick)")
    p.add_argument("--out", default=None, help="where model.onnx goes (default: a temp dir)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="tiny generated dataset + tiny model, seconds")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    import imagenette_lab as lab

    work = Path(args.out or tempfile.mkdtemp(prefix="bench-onnx-"))
    if args.quick:
        from imagenette_lab.data.synthetic import make_synthetic_dataset

        root = make_synthetic_dataset(work / "data", {"train": 8, "val": 8}, size=40)
        run = lab.train("exp2_scratch_cpu", root=str(root), out_dir=str(work), name="tiny", epochs=2, overwrite=True,
                        **{"model.name": "test_resnet", "data.img_size": 32, "data.workers": 0, "train.amp": "off"})
        checkpoint = run.checkpoint
    else:
        if not args.checkpoint or not args.root:
            p.error("give CHECKPOINT and --root (or --quick)")
        checkpoint, root = Path(args.checkpoint), Path(args.root)

    onnx_file = work / "model.onnx"
    r = lab.export(checkpoint, onnx_file, format="onnx", check_root=root, check_images=0, batch_size=args.batch_size)
    c = r.check
    print(f"export check on {c.images} images of {c.data}: max |logit diff| {c.max_abs_diff:.2e}, "
          f"top-1 agreement {c.top1_agreement:.2%}")
    print(f"val accuracy: pytorch {c.torch_accuracy}, onnxruntime {c.export_accuracy}")
    recorded = _recorded(Path(checkpoint))
    if recorded:
        # The run's own evaluation used train.amp (bf16 autocast on a CPU by default); the export
        # check runs float32, like onnxruntime, so a bf16 run may differ from both by an image or two.
        print(f"val accuracy recorded by the run (eval/metrics.json, train.amp={recorded[1]}): {recorded[0]}")
    print(f"img/s (export check, batch {args.batch_size}): pytorch {c.torch_images_per_s:.1f}, "
          f"onnxruntime {c.export_images_per_s:.1f} (x{c.export_images_per_s / c.torch_images_per_s:.2f})")

    val = root / "val"
    # float32 on both sides (predict's default amp=auto would run PyTorch in bf16 on a CPU).
    a = lab.predict(checkpoint, val, top_k=1, batch_size=args.batch_size, amp="off")
    b = lab.predict(onnx_file, val, top_k=1, batch_size=args.batch_size)
    same = sum(x.label == y.label for x, y in zip(a, b))
    print(f"predict {len(a)} images: pytorch {a.images_per_s:.1f} img/s, onnxruntime {b.images_per_s:.1f} img/s "
          f"(x{b.images_per_s / a.images_per_s:.2f}); same top-1 on {same}/{len(a)}")
    ok = c.passed and c.torch_accuracy == c.export_accuracy and same == len(a) == len(b)
    print("OK: onnxruntime reproduces the val accuracy exactly" if ok else "FAILED: the backends differ")
    return 0 if ok else 1


def _recorded(checkpoint: Path) -> tuple[float, str] | None:
    import json

    run = checkpoint if checkpoint.is_dir() else checkpoint.parent.parent
    try:
        acc = json.loads((run / "eval" / "metrics.json").read_text())["accuracy"]
        import yaml

        amp = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("train", {}).get("amp", "?")
    except (OSError, KeyError, ValueError):
        return None
    return acc, amp


if __name__ == "__main__":
    sys.exit(main())
