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
    from imagenette_lab.errors import UserError
    from imagenette_lab.report import build_report
    from imagenette_lab.report.collect import discover

    # Nothing to show is a mistake (a wrong folder), not an empty report: fail before writing.
    if not discover(args.run_dirs)[0]:
        from pathlib import Path

        from imagenette_lab.utils import prepare_out_dir

        out = Path(args.out).expanduser()
        try:  # an unwritable --out is still the error named first
            prepare_out_dir(out.parent)
        except UserError as e:
            raise UserError(f"cannot write the report to {out}: {str(e).rpartition(': ')[2]}") from None
        raise UserError(f"no runs found in {', '.join(args.run_dirs)} (pass run directories, or a folder "
                        "holding them such as a `reproduce --out` folder)")
    result = build_report(args.run_dirs, args.out)
    n_missing = len(result["missing"])
    incomplete = [r["label"] for r in result["runs"] if r["missing"] or r["problems"] or not r["complete"]]
    print(f"wrote {result['html']} and {result['markdown']}: {len(result['runs'])} run(s), "
          f"{result['images']} figure(s)")
    if incomplete:
        print(f"incomplete: {', '.join(incomplete)}", file=sys.stderr)
    if n_missing:
        print(f"no run files in: {', '.join(m['path'] for m in result['missing'])}", file=sys.stderr)
    return 0
