"""`imagenette-lab export CHECKPOINT --format {onnx,safetensors,torchscript} --out FILE`: leave the lab."""

from __future__ import annotations

import argparse

FORMATS = ("onnx", "safetensors", "torchscript")  # export.FORMATS, listed here so --help skips torch


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained checkpoint to ONNX, safetensors or TorchScript (checked against PyTorch)",
        description="Export a `train` checkpoint (a .pt file or its run directory). onnx: torch's exporter "
        "(opset 20, dynamic batch axis), class names and preprocessing in the file's metadata; `predict "
        "FILE.onnx` runs it with onnxruntime. safetensors: the plain timm/torchvision architecture's key "
        "names (loads with timm.create_model(name, num_classes=C, checkpoint_path=FILE)). torchscript: a "
        "traced module. Every export writes FILE.json (classes, preprocessing, check results), then runs "
        "the export and PyTorch on the same images and fails unless the max |logit diff| <= 1e-3 and "
        "top-1 agrees on every image. --int8 (onnx): onnxruntime static quantization calibrated on "
        "--root's train split, checked on --split (val): it passes on top-1 agreement >= 99 %.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a train checkpoint (.pt) or run directory")
    p.add_argument("--format", "-f", choices=FORMATS, default="onnx")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="file to write (.onnx, .safetensors, .pt)")
    p.add_argument("--root", default=None, metavar="DIR",
                   help="check on the real images in DIR/<split>/ (default: generated images)")
    p.add_argument("--split", default="val", help="split folder of --root to check on")
    p.add_argument("--check-images", type=int, default=64, metavar="N",
                   help="about N images (a seeded subset per class); 0 = the whole split")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--int8", action="store_true",
                   help="onnx only: quantize to int8 (needs --root: calibrates on DIR/train)")
    p.add_argument("--calib-images", type=int, default=128, metavar="N",
                   help="with --int8: about N train images for calibration")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import imagenette_lab.api as lab

    r = lab.export(args.checkpoint, args.out, format=args.format, check_root=args.root, check_split=args.split,
                   check_images=args.check_images, batch_size=args.batch_size, int8=args.int8,
                   calib_images=args.calib_images)
    c = r.check
    kind = f"{r.format}{', int8' if args.int8 else ''}{f', opset {r.opset}' if r.opset else ''}"
    print(f"wrote {r.path} ({kind}) and {r.metadata_path}")
    print(f"check on {c.images} images ({c.data}): max |logit diff| {c.max_abs_diff:.2e}, "
          f"top-1 agreement {c.top1_agreement:.2%}")
    if c.torch_accuracy is not None:
        print(f"accuracy: pytorch {c.torch_accuracy:.4f}, {c.backend} {c.export_accuracy:.4f}")
    print(f"img/s (model forward, same threads): pytorch {c.torch_images_per_s:.1f}, {c.backend} {c.export_images_per_s:.1f}")
    print(f"load it with: {r.load_hint}")
    return 0
