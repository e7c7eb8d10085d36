"""`imagenette-lab analyze`: class distribution, file-size statistics and unreadable files."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="class counts/percentages, file-size statistics and plots for a dataset",
        description="Analyse ROOT/<split>/<class>/<image>: class counts and percentages per split "
        "(class_counts.csv/.md/.png, class_percentages.png), per-class file-size statistics "
        "(filesize_stats.csv/.md, filesize_box.png), image sizes and modes (image_stats.csv) and "
        "the files left out (unreadable.csv). Downloads Imagenette first when ROOT is a missing "
        "folder named like an Imagenette archive (e.g. data/imagenette2-160).",
    )
    p.add_argument("--root", default="data/imagenette2-160",
                   help="dataset folder holding <split>/<class>/ (default: %(default)s)")
    p.add_argument("--out", default="runs/analysis",
                   help="output folder (default: %(default)s)")
    p.add_argument("--splits", nargs="+", metavar="SPLIT",
                   help="splits to analyse (default: every split folder, e.g. train val)")
    p.add_argument("--verify", action="store_true",
                   help="fully decode every image to find corrupt ones (slower; the header "
                   "check always runs)")
    p.add_argument("--audit", metavar="DIR",
                   help="include the summary of this finished audit (default: OUT/../audit when it "
                   "audited the same ROOT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so `imagenette-lab --help` stays fast.
    import imagenette_lab.api as lab

    r = lab.analyze(args.root, args.out, splits=args.splits, verify=args.verify, audit=getattr(args, "audit", None))
    names = r.classes
    width = max([len("class"), *(len(n) for n in names.values())])
    print(f"{'class':<{width}}" + "".join(f" {s:>8}" for s in r.counts))
    for wnid, name in names.items():
        row = "".join(f" {c.get(wnid, 0):>8}" for c in r.counts.values())
        print(f"{name:<{width}}{row}")
    print(f"{'total':<{width}}" + "".join(f" {t:>8}" for t in r.totals.values()))
    if r.unreadable:
        print(f"{r.unreadable} unreadable file(s) left out: see unreadable.csv")
    if r.audit:
        from imagenette_lab.audit.link import one_line

        print(one_line(r.audit))
    print(f"analysis written to {Path(r.summary['files']['summary.json']).parent}")
    return 0
