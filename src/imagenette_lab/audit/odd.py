"""Odd images: unreadable, tiny, extreme aspect ratio, near-blank, greyscale, EXIF-rotated.

Unreadable files are the dataset layer's own findings (`SplitIndex.skipped` from the header check,
plus the images `load_rgb` failed to decode during the scan); nothing is re-detected here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

ODD_COLUMNS = ["split", "class", "path", "issue", "value", "detail"]


@dataclass
class OddLimits:
    min_side: int = 64  # px; smaller than any model input worth training on
    max_aspect: float = 3.0  # long side / short side
    blank_std: float = 2.0  # luma std (0-255) of a 64x64 thumbnail; Imagenette's emptiest skies are 3.1+
    # 99th-percentile per-pixel channel spread (0-255). Measured on Imagenette: B&W photos stored as
    # RGB 0-13, silver products with a coloured LED or label 7-20, colour photos mostly 20+.
    grey_chroma: float = 14.0


def find_odd(items: pd.DataFrame, scan: pd.DataFrame, skipped: pd.DataFrame, limits: OddLimits,
             ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(odd_images table, summary). `items` has split, class, path, width, height, mode per row;
    `scan` the matching scan records; `skipped` split, class, path, reason of files not indexed."""
    w, h = items["width"].to_numpy(), items["height"].to_numpy()
    short, long_ = np.minimum(w, h), np.maximum(w, h)
    aspect = long_ / np.maximum(short, 1)
    decoded = (scan["error"] == "").to_numpy()
    std, chroma = scan["std"].to_numpy(float), scan["chroma"].to_numpy(float)
    grey_mode = items["mode"].isin(["1", "L", "LA", "I", "I;16", "F"]).to_numpy()
    grey = grey_mode | (decoded & (chroma < limits.grey_chroma))
    orient = scan["exif_orientation"].to_numpy(int)
    checks = [
        ("unreadable", ~decoded, np.full(len(items), np.nan), scan["error"].to_numpy()),
        ("tiny", short < limits.min_side, short, [f"{a}x{b}" for a, b in zip(w, h)]),
        ("extreme_aspect", aspect > limits.max_aspect, aspect, [f"{a}x{b}" for a, b in zip(w, h)]),
        ("near_blank", decoded & (std < limits.blank_std), std, ["luma std of a 64x64 thumbnail"] * len(items)),
        ("greyscale", grey, chroma, np.where(grey_mode, items["mode"].to_numpy(), "RGB without colour")),
        ("exif_rotated", (orient > 1), orient, ["EXIF orientation tag (1 = upright)"] * len(items)),
    ]
    frames = [pd.DataFrame({"split": skipped["split"], "class": skipped["class"], "path": skipped["path"],
                            "issue": "unreadable", "value": np.nan, "detail": skipped["reason"]})]
    for issue, mask, value, detail in checks:
        m = np.asarray(mask, dtype=bool)
        if m.any():
            frames.append(pd.DataFrame({
                "split": items["split"].to_numpy()[m], "class": items["class"].to_numpy()[m],
                "path": items["path"].to_numpy()[m], "issue": issue,
                "value": np.round(np.asarray(value, dtype=float)[m], 3),
                "detail": np.asarray(detail, dtype=object)[m]}))
    frames = [f for f in frames if len(f)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ODD_COLUMNS)
    table = table[ODD_COLUMNS]

    counts: dict[str, dict[str, int]] = {}
    for split in items["split"].unique().tolist() + [s for s in skipped["split"].unique() if s not in
                                                     items["split"].unique()]:
        sub = table[table["split"] == split]
        counts[split] = {issue: int((sub["issue"] == issue).sum()) for issue, *_ in checks}
    grey_share = (pd.DataFrame({"split": items["split"], "class": items["class"], "grey": grey})
                  .groupby(["split", "class"])["grey"].mean().round(4))
    share: dict[str, dict[str, float]] = {}
    for (split, cls), v in grey_share.items():
        share.setdefault(split, {})[cls] = float(v)
    summary = {
        "counts": counts,
        "greyscale_share": share,
        "limits": limits.__dict__,
        "unreadable_paths": table.loc[table["issue"] == "unreadable", "path"].tolist()[:50],
    }
    return table, summary
