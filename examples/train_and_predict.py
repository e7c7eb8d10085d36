"""Train a classifier, classify images and export it to ONNX, all from Python, in seconds.

    python examples/train_and_predict.py [--out DIR] [--no-export]

Generates a tiny 3-class image-folder dataset (coloured squares) so it runs anywhere; point
`root` at a real dataset (e.g. data/imagenette2-160) and drop the tiny-model overrides for real use.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import imagenette_lab as lab
from imagenette_lab.data.synthetic import make_synthetic_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export (needs onnx, onnxruntime)")
    args = parser.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="imagenette-lab-example-"))

    root = make_synthetic_dataset(work / "data", {"train": 8, "val": 4}, size=32)

    # One override channel: recipe fields by name (epochs=...) or dotted path ("model.name": ...).
    cfg = lab.load_config("exp2_scratch_cpu", root=str(root), out_dir=str(work / "runs"), name="example",
                          epochs=3, lr=0.01, **{"model.name": "test_resnet", "data.img_size": 16,
                                                "data.batch_size": 8, "data.workers": 0, "train.amp": "off"})
    try:
        run = lab.train(cfg)
    except lab.TrainingInterrupted as stop:  # Ctrl-C: the checkpoint to resume from is on the exception
        print(f"stopped; resume with lab.train(resume={str(stop.run_dir)!r})")
        raise SystemExit(stop.exit_code) from None
    print(f"trained {run.run_dir}: val accuracy {run.metrics.accuracy:.3f} (best epoch {run.best_epoch})")

    preds = lab.predict(run.checkpoint, root / "val", top_k=1, amp="off")  # float32, like onnxruntime below
    right = sum(p.label == _name(p.path.parent.name) for p in preds)  # class folder = true class
    print(f"predict: {right}/{len(preds)} val images right, {preds.images_per_s:.0f} img/s ({preds.backend})")

    if not args.no_export:
        exported = lab.export(run.checkpoint, work / "model.onnx", format="onnx", check_root=root)
        c = exported.check
        print(f"exported {exported.path}: max |logit diff| {c.max_abs_diff:.1e}, top-1 agreement {c.top1_agreement:.0%}")
        onnx_preds = lab.predict(exported.path, root / "val", top_k=1)
        same = sum(a.label == b.label for a, b in zip(preds, onnx_preds))
        print(f"onnxruntime agrees on {same}/{len(preds)} images, {onnx_preds.images_per_s:.0f} img/s")


def _name(folder: str) -> str:
    from imagenette_lab.data.classes import display_name

    return display_name(folder)


if __name__ == "__main__":
    main()
