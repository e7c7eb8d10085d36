"""`imagenette-lab zero-shot`: score an ImageNet-1k classifier on a dataset without training."""

from __future__ import annotations

import argparse

from imagenette_lab.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser(
        "zero-shot",
        help="evaluate an ImageNet-pretrained model on a dataset without training",
        description="Map each class folder to its ImageNet-1k index and score the model two ways: "
        "argmax over the dataset's classes only (restricted) and argmax over all 1000 "
        "(predictions outside the dataset count as errors). Writes metrics, reports, confusion "
        "matrices and predictions for both under --out.",
    )
    p.add_argument("--model", default="resnet50", help="model name (torchvision/timm, e.g. resnet50, efficientnet_lite0)")
    p.add_argument("--weights", default="DEFAULT",
                   help="pretrained weights tag (DEFAULT, IMAGENET1K_V2, ...) or 'none' for random init")
    p.add_argument("--weights-file", default=None, metavar="FILE", help="local ImageNet-1k checkpoint to load")
    p.add_argument("--root", required=True, metavar="DIR", help="dataset root holding <split>/<class>/<image>")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--split", default="val", help="split folder to evaluate (default: val)")
    p.add_argument("--class-map", default=None, metavar="FILE",
                   help="JSON/YAML {folder: imagenet_index} for folders that are not ImageNet wnids")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="data-loading worker processes (0 = in-process)")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                   help="mixed precision: auto = bf16 on CPU, fp16 on CUDA")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep NCHW memory format")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--limit-per-class", type=int, default=0, metavar="N",
                   help="evaluate at most N seeded images per class (0 = all)")
    p.add_argument("--holdout-per-class", type=int, default=20, metavar="N",
                   help="seeded train images per class scored into <out>/holdout/ to fit the calibration "
                   "temperature (0 = none)")
    p.add_argument("--no-explain", dest="explain", action="store_false",
                   help="skip the Grad-CAM figures (gradcam_grid.png, top_losses_cam.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.limit_per_class < 0:
        raise UsageError(f"--limit-per-class must be 0 (all) or more, got {args.limit_per_class}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {args.workers}")
    if args.holdout_per_class < 0:
        raise UsageError(f"--holdout-per-class must be 0 (none) or more, got {args.holdout_per_class}")
    # Imported here so `imagenette-lab --help` stays fast (torch, timm).
    import imagenette_lab.api as lab

    weights = None if str(args.weights).lower() == "none" else args.weights
    lab.zero_shot(args.root, args.out, model=args.model, weights=weights, weights_file=args.weights_file,
                  split=args.split, class_map=args.class_map, batch_size=args.batch_size, workers=args.workers,
                  amp=args.amp, channels_last=args.channels_last, device=args.device,
                  limit_per_class=args.limit_per_class, holdout_per_class=args.holdout_per_class,
                  explain=args.explain)
    return 0
