"""The final evaluations' extra figures: calibration (with the held-out temperature) and Grad-CAM.

One call shared by `train` (eval/) and `zero-shot` (restricted/), so both write the same files:
calibration.json, reliability.png, gradcam_grid.png, top_losses_cam.png. Neither part can fail a
run: a missing holdout only skips temperature scaling, a model Grad-CAM cannot handle only skips
the heatmaps (one log line each).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn


def diagnose_eval(eval_dir: str | Path, model: nn.Module, data_cfg: dict[str, Any], logits: np.ndarray,
                  targets: np.ndarray, paths: Sequence[str], class_names: Sequence[str], *,
                  holdout_dir: str | Path | None, explain: bool = True, seed: int = 0, title: str = "",
                  output_index: Sequence[int] | None = None) -> dict[str, Any]:
    """`logits` (N, C) over the C evaluated classes; `output_index[c]` = the model output of class c."""
    from imagenette_lab.calibration import calibrate_logits, softmax
    from imagenette_lab.explain import try_save_explanations

    out: dict[str, Any] = {"calibration": calibrate_logits(eval_dir, logits, targets, holdout_dir, title=title)}
    if explain:
        out["explanations"] = try_save_explanations(
            model, data_cfg, list(paths), np.asarray(targets), softmax(logits), list(class_names), eval_dir,
            output_index=output_index, seed=seed, title=title)
    return out
