"""The Python API of the insight commands: `audit`, `calibrate`, `explain` (see `imagenette_lab.api`).

Kept beside api.py (not in it) so each file reads in one sitting; `imagenette_lab.audit(...)` etc.
reach these functions the same way as the others. Typed results, errors raised as exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class AuditResult:
    out_dir: Path
    images: int
    duplicate_pairs: dict[str, int]  # e.g. {"train-train": 11, "train-val": 1, "val-val": 1}
    cross_split_pairs: int  # possible leakage between splits
    label_issues: int | None  # None when the label check was skipped
    summary: dict[str, Any]  # summary.json as written


def audit(root: str | Path, out: str | Path = "runs/audit", **options: Any) -> AuditResult:
    """Duplicates and train/val leakage, likely label errors and odd images of `<root>/<split>/<class>/`.

    `options` are `imagenette_lab.audit.core.AuditConfig` fields (splits, model, cos_min, folds, ...).
    """
    from dataclasses import fields

    from imagenette_lab.audit.core import AuditConfig, run_audit
    from imagenette_lab.errors import UsageError

    known = {f.name for f in fields(AuditConfig)} - {"root", "out"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"unknown audit option(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    s = run_audit(AuditConfig(root=root, out=out, **options))
    lab = s["label_issues"]
    return AuditResult(Path(out).expanduser(), int(s["images"]), dict(s["duplicates"]["pairs"]),
                       int(s["leakage"]["cross_split_pairs"]), None if "skipped" in lab else int(lab["issues"]), s)


@dataclass(frozen=True)
class CalibrationResult:
    eval_dir: Path
    ece: float  # expected calibration error, 15 equal-width bins
    mce: float
    temperature: float | None  # None without a held-out train slice to fit it on
    ece_after: float | None
    details: dict[str, Any]  # calibration.json as written


def calibrate(run_or_eval_dir: str | Path, holdout: str | Path | None = None) -> list[CalibrationResult]:
    """ECE/MCE, reliability diagram and temperature scaling from saved logits (nothing is rerun)."""
    from imagenette_lab.calibration import calibrate_run

    return [CalibrationResult(Path(d), float(s["ece"]), float(s["mce"]), s.get("temperature"), s.get("ece_after"), s)
            for d, s in calibrate_run(run_or_eval_dir, holdout).items()]


@dataclass(frozen=True)
class Explanation:
    image: Path
    figure: Path  # the image beside its Grad-CAM heatmap
    predicted: str
    probability: float
    explained_class: str
    target_layer: str


@dataclass(frozen=True)
class ExplainResult:
    explanations: list[Explanation]
    skipped: list[tuple[Path, str]]  # (file, reason): files that are not readable images


def explain(model: str | Path, inputs: Iterable[str | Path] | str | Path, out: str | Path, *,
            class_name: str | None = None, target_layer: str | None = None, weights: str | None = None,
            weights_file: str | Path | None = None, device: str = "auto", batch_size: int = 8,
            on_skip: Callable[[str, str], None] | None = None) -> ExplainResult:
    """Grad-CAM overlays of a checkpoint, run directory or ImageNet model name for images/folders."""
    from imagenette_lab.engine.evaluate import resolve_device
    from imagenette_lab.errors import UsageError
    from imagenette_lab.explain import explain_images
    from imagenette_lab.predict import load_predictor

    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    predictor = load_predictor(str(model), weights, str(weights_file) if weights_file else None,
                               resolve_device(device))
    rows, skipped = explain_images(predictor, inputs, out, class_name=class_name, target_layer=target_layer,
                                   batch_size=batch_size, on_skip=on_skip)
    return ExplainResult([Explanation(Path(r["path"]), Path(r["output"]), r["predicted"], r["probability"],
                                      r["explained_class"], r["target_layer"]) for r in rows],
                         [(Path(p), why) for p, why in skipped])
