"""`imagenette-lab report RUN_DIR... --out report.html`: one self-contained HTML report + report.md."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="build a self-contained HTML report (and a Markdown summary) from run directories",
        description="Render analysis, zero-shot and training run directories into ONE HTML file "
        "(figures embedded, no network needed) with a comparison against the study's Table 2, "
        "plus a Markdown summary next to it. Pass stage directories or a folder holding them "
        "(e.g. a `reproduce` output directory), in any order. Incomplete runs are shown with what "
        "they hold and a list of what is missing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directory (analysis, zero-shot, train) or a folder containing them")
    p.add_argument("--out", "-o", default="report.html",
                   help="HTML file to write; the Markdown summary goes next to it (.md)")
    p.set_defaults(func=run)


def run(args) -> int:
    import imagenette_lab.api as lab

    r = lab.report(args.run_dirs, args.out)
    incomplete = [x["label"] for x in r.runs if x["missing"] or x["problems"] or not x["complete"]]
    print(f"wrote {r.html} and {r.markdown}: {len(r.runs)} run(s), {r.figures} figure(s)")
    if incomplete:
        print(f"incomplete: {', '.join(incomplete)}", file=sys.stderr)
    if r.missing:
        print(f"no run files in: {', '.join(m['path'] for m in r.missing)}", file=sys.stderr)
    return 0
