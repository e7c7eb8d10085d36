"""`imagenette-lab explain CHECKPOINT|MODEL IMAGE_OR_DIR... --out DIR`: Grad-CAM overlays for any images."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="Grad-CAM heatmaps: where a checkpoint or ImageNet model looks in given images",
        description="For each image, writes <out>/NNN_<name>.png: the model's input crop beside its "
        "Grad-CAM heatmap for the predicted class (or --class), plus explanations.csv. "
        "CHECKPOINT|MODEL is a `train` checkpoint or run directory, or an ImageNet-1k model name. "
        "Files that are not readable images are listed and skipped.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", metavar="CHECKPOINT|MODEL")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                   help="explain this class instead of the predicted one")
    p.add_argument("--target-layer", default=None, metavar="NAME",
                   help="module to explain (e.g. layer4, base.bn2); default: the last spatial block")
    p.add_argument("--weights", default=None, help="ImageNet weights tag for a model name")
    p.add_argument("--weights-file", default=None, metavar="FILE", help="local ImageNet-1k weights for a model name")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imagenette_lab.api_insight import explain

    res = explain(args.model, args.inputs, args.out, class_name=args.class_name, target_layer=args.target_layer,
                  weights=args.weights, weights_file=args.weights_file, device=args.device,
                  batch_size=args.batch_size,
                  on_skip=lambda path, reason: print(f"skipping {path} ({reason})", file=sys.stderr))
    for e in res.explanations:
        print(f"{e.image}: {e.predicted} ({e.probability:.2f}); heatmap of {e.explained_class} -> {e.figure}")
    if res.skipped:
        print(f"{len(res.explanations)} image(s) explained, {len(res.skipped)} file(s) skipped", file=sys.stderr)
    return 0
