"""`imagenette-lab predict CHECKPOINT_OR_MODEL IMAGE_OR_DIR...`: top-k classes with probabilities."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="classify images with a trained checkpoint or an ImageNet model",
        description="Print the top-k classes and probabilities for each image. CHECKPOINT_OR_MODEL "
        "is a checkpoint written by `train` (a .pt file, or the run directory: uses "
        "checkpoints/best.pt), a .onnx file written by `export` (run with onnxruntime) or an "
        "ImageNet-1k model name such as efficientnet_lite0 or resnet50. "
        "Directories are searched recursively; files that are not readable images are skipped "
        "with a message.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", metavar="CHECKPOINT_OR_MODEL")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--top-k", "-k", type=int, default=3, help="classes shown per image")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of {path, predictions: [{class, probability}]}")
    p.add_argument("--weights", default=None,
                   help="ImageNet weights tag for a model name (DEFAULT, IMAGENET1K_V2, ...); default DEFAULT")
    p.add_argument("--weights-file", default=None, metavar="FILE",
                   help="local ImageNet-1k weights for a model name")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--img-size", type=int, default=None, metavar="N",
                   help="input side length to use (an .onnx file built for another size is refused)")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="class names, one per line (a model with another class count is refused)")
    p.add_argument("--workers", type=int, default=2, help="data-loading worker processes (0 = in-process)")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                   help="mixed precision: auto = bf16 on CPU, fp16 on CUDA")
    p.set_defaults(func=run)


def run(args) -> int:
    from imagenette_lab.errors import UsageError

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {args.workers}")
    import imagenette_lab.api as lab
    from imagenette_lab.predict import print_skip

    r = lab.predict(args.model, args.inputs, top_k=args.top_k, batch_size=args.batch_size, device=args.device,
                    weights=args.weights, weights_file=args.weights_file, img_size=args.img_size,
                    labels=args.labels, workers=args.workers, amp=args.amp, on_skip=print_skip)
    if args.json:
        out = [{"path": str(im.path), "predictions": [{"class": c.name, "probability": c.probability} for c in im.top]}
               for im in r.images]
        print(json.dumps(out, indent=2))
    else:
        from imagenette_lab.predict import format_table

        print(format_table([{"path": str(im.path), "predictions": [{"class": c.name, "probability": c.probability}
                                                                   for c in im.top]} for im in r.images]))
    print(f"{len(r.images)} image(s) classified, {len(r.skipped)} file(s) skipped; {r.backend}: "
          f"{r.images_per_s:.1f} img/s (model forward, {r.model_seconds:.2f} s)", file=sys.stderr)
    return 0
