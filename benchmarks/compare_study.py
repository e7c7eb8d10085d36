"""Pairwise McNemar (exact) + Holm across a study's experiments, from their saved predictions.

    python benchmarks/compare_study.py runs/study
    python benchmarks/compare_study.py runs/study --json

Reads exp1_zero_shot/restricted, exp2_scratch/eval and exp3_transfer/eval (predictions.npz) and prints
each pair's accuracies, discordant counts, p and Holm-adjusted p. Seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imagenette_lab.predictions import Predictions
from imagenette_lab.stats import compare_all

FOLDERS = {"Exp 1 (zero-shot, restricted)": "exp1_zero_shot/restricted", "Exp 2 (scratch)": "exp2_scratch/eval",
           "Exp 3 (transfer)": "exp3_transfer/eval"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    named = {k: Predictions.load(args.study / v) for k, v in FOLDERS.items() if (args.study / v / "predictions.npz").is_file()}
    rows = compare_all(named)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        if "refused" in r or "skipped" in r:
            print(f"{r['a']} vs {r['b']}: {r.get('refused') or r.get('skipped')}")
            continue
        print(f"{r['a']} vs {r['b']} on {r['n']} images: accuracy {r['a_accuracy']:.4f} vs {r['b_accuracy']:.4f}; "
              f"only {r['a']} right {r['a_only_correct']}, only {r['b']} right {r['b_only_correct']}; "
              f"McNemar exact p = {r['mcnemar_exact_p']:.3g}, Holm p = {r['p_holm']:.3g}"
              f"{' (significant at 0.05)' if r['significant'] else ''}")


if __name__ == "__main__":
    main()
