"""Preprocessing presets built from torchvision.transforms.v2 (input: PIL RGB image).

`data_cfg` is the dict a model factory resolves from the weights' own preprocessing:
{"input_size": (3, H, W), "mean", "std", "crop_pct", "interpolation"}.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_data_cfg(img_size: int = 224, crop_pct: float = 0.875) -> dict[str, Any]:
    return {
        "input_size": (3, img_size, img_size),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "crop_pct": crop_pct,
        "interpolation": "bilinear",
    }


def _interp(name: str) -> InterpolationMode:
    return InterpolationMode.BICUBIC if name == "bicubic" else InterpolationMode.BILINEAR


def _to_normalized_tensor(mean, std) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def eval_transform(data_cfg: dict[str, Any]) -> v2.Compose:
    """Resize the short side to size / crop_pct, centre-crop `size` (timm/torchvision eval recipe)."""
    size = int(data_cfg["input_size"][-1])
    resize = int(math.floor(size / float(data_cfg.get("crop_pct", 0.875))))
    return v2.Compose(
        [
            v2.Resize(resize, interpolation=_interp(data_cfg.get("interpolation", "bilinear")), antialias=True),
            v2.CenterCrop(size),
            *_to_normalized_tensor(data_cfg["mean"], data_cfg["std"]),
        ]
    )


def train_transform(
    data_cfg: dict[str, Any],
    augment: str = "baseline",
    min_scale: float = 0.35,
    random_erasing: float = 0.0,
) -> v2.Compose:
    """Random-resized-crop + flip, optionally + TrivialAugmentWide / RandAugment, + random erasing."""
    if augment == "none":
        return eval_transform(data_cfg)
    size = int(data_cfg["input_size"][-1])
    interp = _interp(data_cfg.get("interpolation", "bilinear"))
    ops: list = [
        v2.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=interp, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if augment == "trivialaugment":
        ops.append(v2.TrivialAugmentWide(interpolation=interp))
    elif augment == "randaugment":
        ops.append(v2.RandAugment(interpolation=interp))
    ops += _to_normalized_tensor(data_cfg["mean"], data_cfg["std"])
    if random_erasing > 0:
        ops.append(v2.RandomErasing(p=random_erasing, value=0))
    return v2.Compose(ops)


def batch_mixer(num_classes: int, mixup: float = 0.0, cutmix: float = 0.0):
    """MixUp / CutMix on a batch (images, int labels) -> (images, soft labels); None when both are off."""
    mixers = []
    if mixup > 0:
        mixers.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
    if cutmix > 0:
        mixers.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
