"""Frozen-backbone embeddings for the audit, through the project's feature cache.

`--model efficientnet_lite0` (default) uses the offline ImageNet weights; any torchvision/timm name
works the same way. `--model pixels` is a weight-free backend (a downsampled image, flattened): fast,
offline and deterministic, for tests and for a quick first look at exact/resized copies. Embeddings
are stored as `<out>/cache/features/<split>_view0.pt` keyed by the model, weights, preprocessing and
the split's file list, so a rerun with the same settings decodes nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from imagenette_lab.data.dataset import SplitIndex
from imagenette_lab.engine import features as feat

log = logging.getLogger(__name__)

PIXELS = "pixels"
PIXEL_SIDE = 16  # 16x16x3 = 768 numbers: enough to tell apart photos, blind to re-encoding noise


class Embedder(nn.Module):
    """Pooled features of a backbone; `pooled_features` is what the feature cache calls."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def pooled_features(self, x: Tensor) -> Tensor:
        return self.base(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pooled_features(x)


class Pixels(nn.Module):
    """Weight-free 'backbone': average-pool the image to PIXEL_SIDE x PIXEL_SIDE and flatten."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.adaptive_avg_pool2d(x.float(), PIXEL_SIDE).flatten(1)


def build(name: str, img_size: int | None = None) -> tuple[Embedder, Any, dict[str, Any]]:
    """(embedder, eval transform, data config) for a backend name."""
    from imagenette_lab.data.transforms import eval_transform

    if name == PIXELS:
        side = img_size or 4 * PIXEL_SIDE
        dc = {"input_size": (3, side, side), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
              "crop_pct": 1.0, "interpolation": "bilinear"}
        # Squash rather than crop: a copy that was cropped/padded differently still lines up.
        tf = v2.Compose([v2.Resize((side, side), antialias=True), v2.ToImage(),
                         v2.ToDtype(torch.float32, scale=True), v2.Normalize(dc["mean"], dc["std"])])
        return Embedder(Pixels()).eval(), tf, dc
    from imagenette_lab.models.factory import create_classifier, data_config

    clf = create_classifier(name, 1, pretrained=True, freeze_base=True)
    dc = dict(data_config(clf, name, "DEFAULT"))
    if img_size:
        dc["input_size"] = (3, img_size, img_size)
    # crop_pct 1: embed the whole picture (a centre crop would hide differing borders of near-copies).
    dc["crop_pct"] = 1.0
    return Embedder(clf.base).eval(), eval_transform(dc), dc


def embed_splits(name: str, indexes: list[SplitIndex], cache_dir: Path, *, img_size: int | None,
                 batch_size: int, workers: int, device: torch.device, amp: str,
                 seed: int = 0) -> tuple[list[feat.Features], dict[str, Any]]:
    """Eval-view features of every split (cached); returns them and a small info dict."""
    model, tf, dc = build(name, img_size)
    meta = {"audit_model": name, "data_cfg": dc, "amp": amp,
            "base": feat.weights_fingerprint(model) if name != PIXELS else PIXELS}
    out, seconds = [], 0.0
    for index in indexes:
        f = feat.load_or_extract(
            cache_dir, index.split, {**meta, "split": feat.split_fingerprint(index)}, None, model, index,
            [tf], batch_size=batch_size, workers=workers, device=device, amp=amp,
            channels_last=name != PIXELS, seed=seed, desc=f"embed {index.split}")
        seconds += f.seconds
        out.append(f)
    n = sum(f.n for f in out)
    info = {"model": name, "input_size": list(dc["input_size"]), "dim": max(int(f.x.shape[-1]) for f in out),
            "seconds": round(seconds, 2), "images": n, "cached": seconds == 0.0,
            "images_per_s": round(n / seconds, 1) if seconds > 0 else None}
    return out, info
