"""`imagenette-lab calibrate RUN_OR_EVAL_DIR`: ECE/MCE, reliability diagram, temperature scaling."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="calibration of saved predictions: ECE, reliability diagram, temperature scaling",
        description="Reads the saved logits of a run (train: eval/; zero-shot: restricted/ and "
        "imagenet1000/) or of one evaluation directory, fits a temperature on the held-out train "
        "slice (<run>/holdout/predictions.npz, or --holdout) and writes calibration.json and "
        "reliability.png next to the predictions. Nothing is rerun: old runs work too.",
    )
    p.add_argument("path", metavar="RUN_OR_EVAL_DIR")
    p.add_argument("--holdout", default=None, metavar="DIR",
                   help="directory with the held-out train slice's predictions.npz (default: <run>/holdout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imagenette_lab.api_insight import calibrate

    for c in calibrate(args.path, args.holdout):
        s = c.details
        after = (f" -> {c.ece_after:.4f} after T = {c.temperature:.3f} (NLL {s['nll_before']:.4f} -> "
                 f"{s['nll_after']:.4f})" if c.temperature is not None else f" ({s.get('note', '')})")
        print(f"{c.eval_dir}: ECE {c.ece:.4f}, MCE {c.mce:.4f}{after}")
    return 0
