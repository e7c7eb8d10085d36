"""`imagenette-lab train`: train a classifier from a config recipe; resume an interrupted run."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from imagenette_lab.errors import TrainingInterrupted, UsageError

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a classifier (scratch, frozen-base transfer, fine-tuning) from a config",
        description="Train per a config recipe (built-in name or YAML file) into <out_dir>/<name>/: "
        "checkpoints, history, curves, evaluation of the best checkpoint, run.json. Ctrl-C or SIGTERM "
        "saves a checkpoint at the current step; --resume RUN_DIR continues exactly.",
    )
    p.add_argument("--config", default=None, metavar="NAME|FILE",
                   help="built-in recipe (exp2_scratch, exp2_scratch_cpu, exp2_fast_cpu, exp3_transfer, exp3_transfer_cpu) "
                   "or a YAML file; with --resume the run's own config is used when omitted")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=0.001 (repeatable)")
    p.add_argument("--root", default=None, metavar="DIR", help="dataset root (sets data.root)")
    p.add_argument("--out", default=None, metavar="DIR", help="parent folder of the run directory (sets out_dir)")
    p.add_argument("--name", default=None, help="run name = run directory under --out (sets name)")
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="sets train.epochs")
    p.add_argument("--weights-file", default=None, metavar="FILE",
                   help="start the backbone from a local ImageNet checkpoint instead of a download "
                   "(sets model.weights_file)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="train N seeds (seed, seed+1, ...) into sibling run folders <name>, <name>_seed<s>, and "
                   "write <name>_seeds/ (mean ± sd per metric, per-seed table, banded curves); finished seeds "
                   "are reused on a rerun")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a run directory that already holds a run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.config is None and args.resume is None:
        raise UsageError("give --config NAME|FILE (or --resume RUN_DIR)")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    if args.seeds > 1 and args.resume is not None:
        raise UsageError("--seeds starts (or continues) the seed runs itself; "
                         "rerun the same command instead of --resume")
    if args.resume is not None and (args.out is not None or args.name is not None):
        raise UsageError("--out/--name choose a new run directory; a resumed run stays in RUN_DIR")
    if args.weights_file is not None and args.resume is not None:
        raise UsageError("--weights-file sets the starting weights of a new run; a resumed run "
                         "continues from its checkpoint")
    flags = {"data.root": args.root, "train.epochs": args.epochs, "model.weights_file": args.weights_file,
             "out_dir": args.out, "name": args.name}
    overrides: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    # Imported here so `imagenette-lab --help` stays fast (torch, timm).
    import imagenette_lab.api as lab
    from imagenette_lab.config import parse_overrides

    overrides.update(_dotted(parse_overrides(args.overrides)))  # --set beats the shortcut flags
    if args.seeds > 1:
        from imagenette_lab.seeds import train_seeds

        result = train_seeds(lab.load_config(args.config, **overrides), args.seeds, overwrite=args.overwrite)
        if result["status"] == "complete":
            for k in ("accuracy", "macro_f1"):
                s = result["metrics"][k]
                print(f"{k} over {result['n_seeds']} seeds: {s['mean']:.4f} ± {s['sd']:.4f} "
                      f"(min {s['min']:.4f}, max {s['max']:.4f})")
        return int(result["exit_code"])
    # An interrupt raises TrainingInterrupted: the CLI prints it in one line and exits 128 + signal.
    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 speaks
    try:
        r = lab.train(args.config, resume=args.resume, overwrite=args.overwrite, **overrides)
    except TrainingInterrupted as e:
        if not rank0:
            return e.exit_code
        raise
    if not rank0:
        return 0
    extra_probe = f", probe {r.probe_accuracy:.4f}" if r.probe_accuracy is not None else ""
    ci_text = f" [{r.accuracy_ci[0]:.4f}, {r.accuracy_ci[1]:.4f}]" if r.accuracy_ci else ""
    how = {"best_on_holdout": "best on holdout", "last": "last epoch",
           "best_on_eval_split": "best on val (selected on the reported split)"}.get((r.selection or {}).get("rule"), "best")
    print(f"{r.run_dir}: val accuracy {r.metrics.accuracy:.4f}{ci_text}, macro F1 {r.metrics.macro_f1:.4f} "
          f"(epoch {r.best_epoch}, {how}){extra_probe}")
    return 0


def _dotted(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
