"""Optional results the report shows when their files exist: calibration, paired tests.

Calibration comes from `calibration.json` in an evaluation bundle (written by `calibration.py`);
paired tests compare the per-image predictions of two runs scored on the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imagenette_lab import runrecord as rr
from imagenette_lab.report.display import Run, Variant, is_number, read_csv, read_json

ALPHA = 0.05


def add_eval_extras(run: Run, v: Variant, folder: Path) -> None:
    cal = read_json(run, folder / rr.CALIBRATION_JSON)
    if not isinstance(cal, dict) or not is_number(cal.get("ece")):
        return
    text = f"Calibration ({cal.get('n_bins', 15)} bins): expected calibration error {cal['ece']:.3f}"
    if is_number(cal.get("ece_after")):
        text += f" → {cal['ece_after']:.3f} after temperature scaling"
        if is_number(cal.get("temperature")):
            text += f" (T = {cal['temperature']:.2f}"
            text += f", fitted on {cal['fitted_on']})" if cal.get("fitted_on") else ")"
    if is_number(cal.get("mce")):
        text += f"; maximum calibration error {cal['mce']:.3f}"
        if is_number(cal.get("mce_after")):
            text += f" → {cal['mce_after']:.3f}"
    if is_number(cal.get("nll_before")) and is_number(cal.get("nll_after")):
        text += f"; NLL {cal['nll_before']:.3f} → {cal['nll_after']:.3f}"
    if cal.get("note") and not is_number(cal.get("ece_after")):
        text += f" ({cal['note']})"
    v.notes.append(text + ".")
    v.metrics.setdefault("_calibration", cal)


# ----------------------------------------------------------------------------- paired tests


def _holm(pvalues: list[float]) -> list[float]:
    try:
        from imagenette_lab.stats import holm  # the project's implementation, when present

        adjusted = holm(pvalues)
        adjusted = adjusted[0] if isinstance(adjusted, tuple) else adjusted  # (adjusted, reject)
        return [float(p) for p in adjusted]
    except (ImportError, TypeError, ValueError):
        pass
    # Holm's step-down adjustment (a few lines; kept here until stats.holm is available).
    order = np.argsort(pvalues)
    m, out, running = len(pvalues), [1.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def _predictions(run: Run, folder: Path) -> pd.DataFrame | None:
    df = read_csv(run, folder / rr.PREDICTIONS_CSV)
    if df is None or not {"path", "true"} <= set(df.columns):
        return None
    pred = "predicted" if "predicted" in df.columns else "predicted_restricted"
    if pred not in df.columns:
        return None
    return df[["path", "true", pred]].rename(columns={pred: "predicted"}).set_index("path")


def paired_tests(entries: list[tuple[str, Run, Path]]) -> tuple[list[dict[str, Any]], list[str]]:
    """McNemar's exact test for every pair of (label, run, eval folder), Holm-corrected across pairs.

    Pairs scored on different files are not tested; the note names the mismatch.
    """
    from imagenette_lab.metrics import paired_comparison

    preds = [(label, _predictions(run, folder)) for label, run, folder in entries]
    preds = [(label, p) for label, p in preds if p is not None]
    tests, notes = [], []
    for i in range(len(preds)):
        for j in range(i + 1, len(preds)):
            (la, a), (lb, b) = preds[i], preds[j]
            if set(a.index) != set(b.index):
                only = sorted(set(a.index) ^ set(b.index))
                notes.append(f"{la} vs {lb}: not tested, scored on different images ({len(a):,} vs {len(b):,}; "
                             f"first differing file {Path(str(only[0])).name})")
                continue
            b = b.loc[a.index]
            cats = pd.Categorical(pd.concat([a["true"], a["predicted"], b["predicted"]]).astype(str))
            codes = cats.codes.reshape(3, -1)  # the same integer code for the same class name
            res = paired_comparison(codes[0], codes[1], codes[2], names=("a", "b"))
            if res.get("mcnemar_exact_p") is None:  # e.g. one class: stats.paired_table skips the test
                notes.append(f"{la} vs {lb}: not tested ({res.get('skipped') or 'no paired test possible'})")
                continue
            tests.append({"a": la, "b": lb, "n": res["n"], "a_only": res["a_only_correct"],
                          "b_only": res["b_only_correct"], "p": res["mcnemar_exact_p"]})
    for t, adj in zip(tests, _holm([t["p"] for t in tests])):
        t["p_holm"] = adj
        t["significant"] = adj < ALPHA
    return tests, notes
