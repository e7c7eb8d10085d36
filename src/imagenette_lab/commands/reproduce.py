"""`imagenette-lab reproduce`: analysis + Exp 1 + Exp 2 + Exp 3 + report, resumable."""

import os

from imagenette_lab.errors import UsageError
from imagenette_lab.reproduce import PROFILES, STAGES


def register(sub):
    p = sub.add_parser(
        "reproduce",
        help="run the whole study (analysis, Exp 1-3) and write report.html",
        description="Run the whole study and build the report. Profiles: "
        + " ".join(f"[{k}] {v.description}" for k, v in PROFILES.items()),
    )
    p.add_argument("--profile", choices=list(PROFILES), default="cpu-quick")
    p.add_argument("--root", default=None,
                   help="dataset root (default: the profile's; imagenette2-160/-320 are downloaded when missing)")
    p.add_argument("--out", default="runs/study", help="output folder (default: runs/study)")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=None, help="run only these stages")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="EXP.KEY=VALUE",
                   help="override a training config value, e.g. exp2.train.epochs=3 (repeatable)")
    p.add_argument("--workers", type=int, default=None, help="data-loader workers")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="train Exp 2 and Exp 3 with N seeds (sibling folders + <stage>_seeds/ summary)")
    p.add_argument("--force", action="store_true",
                   help="rerun stages even when complete and unchanged (a stage whose settings or "
                   "data changed always reruns)")
    p.set_defaults(func=run)


def run(args) -> int:
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:  # launched by torchrun with several processes
        raise UsageError("reproduce runs as one process (several would write the same files); launch "
                         "`imagenette-lab train` under torchrun for the training stages")
    from imagenette_lab.reproduce import reproduce

    summary = reproduce(args.profile, args.out, root=args.root, stages=args.stages,
                        overrides=args.overrides, force=args.force, workers=args.workers, seeds=args.seeds)
    print(f"report: {summary['report']}")
    return 0
