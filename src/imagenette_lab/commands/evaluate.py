"""`imagenette-lab evaluate CHECKPOINT|RUN_DIR|MODEL --root DIR --out DIR`: score a model on a split."""

from __future__ import annotations

import argparse

from imagenette_lab.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a train checkpoint or an ImageNet model on a split (metrics with CIs, saved logits)",
        description="Evaluate a checkpoint written by `train` (a .pt file or the run directory: uses "
        "checkpoints/best.pt, the selected checkpoint) or an ImageNet-1k model name on <root>/<split>. "
        "Writes the same bundle as training's final evaluation into --out: predictions.npz (logits), "
        "predictions.csv, metrics.json with 95 percent bootstrap CIs, reports, confusion matrices, top losses. "
        "On a checkpoint the run's own batch size, precision and val subset are the defaults, so its "
        "val metrics are reproduced exactly.",
    )
    p.add_argument("model", metavar="CHECKPOINT|RUN_DIR|MODEL")
    p.add_argument("--root", required=True, metavar="DIR", help="dataset root holding <split>/<class>/<image>")
    p.add_argument("--split", default="val", help="split folder to evaluate (default: val)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's (checkpoint) or 64")
    p.add_argument("--workers", type=int, default=2, help="data-loading worker processes (0 = in-process)")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default=None,
                   help="mixed precision (default: the run's train.amp, or auto = bf16 on CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--tta", choices=("none", "flip"), default=None,
                   help="test-time augmentation: flip averages each image's logits with its mirror's "
                   "(default: the run's data.tta, or none)")
    p.add_argument("--limit-per-class", type=int, default=None, metavar="N",
                   help="at most N seeded images per class (default: the run's own val subset on its val "
                   "split, else all)")
    p.add_argument("--weights", default=None, help="ImageNet weights tag for a model name (default DEFAULT)")
    p.add_argument("--weights-file", default=None, metavar="FILE", help="local ImageNet-1k weights for a model name")
    p.add_argument("--class-map", default=None, metavar="FILE",
                   help="JSON/YAML {folder: imagenet_index} for a model name on folders that are not wnids")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {args.workers}")
    # Imported here so `imagenette-lab --help` stays fast (torch, timm).
    import imagenette_lab.api as lab

    r = lab.evaluate(args.model, args.root, args.out, split=args.split, batch_size=args.batch_size,
                     workers=args.workers, device=args.device, amp=args.amp, limit_per_class=args.limit_per_class,
                     weights=args.weights, weights_file=args.weights_file, class_map=args.class_map, tta=args.tta)
    m = r.details
    lo, hi = m["ci"]["accuracy"]
    print(f"{args.out}: accuracy {m['accuracy']:.4f} [{lo:.4f}, {hi:.4f}], macro F1 {m['macro_f1']:.4f} "
          f"on {m['n']} images")
    return 0
