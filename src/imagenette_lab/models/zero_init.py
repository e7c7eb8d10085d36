"""`model.zero_init_last`: every residual block's last BatchNorm starts at weight 0, so each block starts
as the identity (Goyal et al. 2017; torchvision ResNet's `zero_init_residual`, timm ResNet's
`zero_init_last`). torchvision's and timm's EfficientNet builders have no such switch, hence this walk.
"""

from __future__ import annotations

from timm.models import _efficientnet_blocks as timm_blocks
from torch import nn
from torchvision.models import efficientnet as tv_effnet
from torchvision.models import resnet as tv_resnet


def _last_norm(block: nn.Module) -> nn.Module | None:
    """The BatchNorm that ends `block`'s residual branch, None if it is not a known residual block."""
    if isinstance(block, (tv_effnet.MBConv, tv_effnet.FusedMBConv)):
        return block.block[-1][1] if block.use_res_connect else None
    if isinstance(block, tv_resnet.BasicBlock):
        return block.bn2
    if isinstance(block, tv_resnet.Bottleneck):
        return block.bn3
    if isinstance(block, timm_blocks.InvertedResidual):  # also CondConvResidual
        return block.bn3 if block.has_skip else None
    if isinstance(block, (timm_blocks.DepthwiseSeparableConv, timm_blocks.EdgeResidual)):
        return block.bn2 if block.has_skip else None
    return None


def zero_init_last(model: nn.Module) -> int:
    """Zero the last BatchNorm weight of every residual block in `model`; returns how many blocks.
    timm blocks with their own `zero_init_last()` (ResNet, RegNet, CSPNet, ...) use it."""
    n = 0
    for block in model.modules():
        if callable(getattr(block, "zero_init_last", None)):
            block.zero_init_last()
            n += 1
        elif (norm := _last_norm(block)) is not None:
            nn.init.zeros_(norm.weight)
            n += 1
    return n
