"""Find a finished audit of a dataset and condense its summary (for `analyze` and the report).

Light on purpose: json only, no torch/pandas, so `analyze` pays nothing when there is no audit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imagenette_lab.errors import UserError


def read_audit(audit_dir: str | Path) -> dict[str, Any] | None:
    """The summary of a complete audit in `audit_dir` (run.json kind "audit" present), else None."""
    d = Path(audit_dir)
    try:
        run = json.loads((d / "run.json").read_text())
        summary = json.loads((d / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if run.get("kind") != "audit" or run.get("status", "complete") != "complete":
        return None
    return summary


def find_audit(root: str | Path, analysis_out: str | Path, explicit: str | Path | None = None,
               ) -> tuple[Path, dict[str, Any]] | None:
    """An audit to include in an analysis: `explicit` (must exist), else a sibling `audit/` folder of
    the analysis output (the CLI defaults runs/analysis + runs/audit) made for the same dataset root."""
    if explicit is not None:
        s = read_audit(explicit)
        if s is None:
            raise UserError(f"{explicit} holds no finished audit (run: imagenette-lab audit --out {explicit})")
        return Path(explicit), s
    sibling = Path(analysis_out).expanduser().resolve().parent / "audit"
    s = read_audit(sibling)
    if s is None or Path(s.get("root", "")).resolve() != Path(root).expanduser().resolve():
        return None
    return sibling, s


def condense(audit_dir: Path, s: dict[str, Any]) -> dict[str, Any]:
    """The few numbers an analysis summary carries about its audit, plus where the files are."""
    lab = s.get("label_issues", {})
    odd = s.get("odd_images", {}).get("counts", {})
    return {
        "dir": str(audit_dir),
        "images": s.get("images"),
        "duplicate_pairs": s.get("duplicates", {}).get("pairs", {}),
        "cross_split_pairs": s.get("leakage", {}).get("cross_split_pairs"),
        "label_issues": lab.get("issues"),
        "label_check_skipped": lab.get("skipped"),
        "odd_images": {k: sum(v.get(k, 0) for v in odd.values()) for k in next(iter(odd.values()), {})},
        "files": s.get("files", {}),
    }


def one_line(a: dict[str, Any]) -> str:
    labels = a["label_issues"] if a["label_issues"] is not None else "n/a"
    odd = ", ".join(f"{k} {v}" for k, v in a["odd_images"].items() if v) or "none"
    return (f"audit ({a['dir']}): {a['cross_split_pairs']} cross-split duplicate pair(s), "
            f"{labels} likely label error(s), odd images: {odd}")
