"""`train.freeze_modules` + `train.freeze_last_epochs`: FreezeOut-style training (Brock et al. 2017).

In the last epochs the named early submodules stop training. Their inputs need no gradient, so autograd
skips their whole backward, and the early layers run on the largest maps: on a 2-core Zen 4, bf16,
EfficientNet-B0 at 128 px, batch 64, freezing `base.features.0`-`2` (19k of 4M parameters) makes a
step ~23 % faster. By then the one-cycle learning rate is small, so they would move little anyway.
Their BatchNorm layers stay in train mode and keep updating running statistics (timm's `freeze` with
`include_bn_running_stats=False`), so the state_dict keeps its keys and `recalibrate_bn` still works.
"""

from __future__ import annotations

from torch import nn

from imagenette_lab.errors import UserError


def check_freeze(model: nn.Module, names: list[str], world_size: int) -> None:
    """Refuse, before any training, names the model does not have and use under torchrun."""
    known = dict(model.named_modules())
    for name in names:
        if not name or name not in known:
            some = ", ".join([n for n in known if 1 <= n.count(".") <= 2][:6])
            raise UserError(f"train.freeze_modules: no module '{name}' in this model (its modules: {some}, ...)")
    if names and world_size > 1:
        raise UserError("train.freeze_modules is not supported under torchrun: DistributedDataParallel "
                        "expects a gradient for every parameter it was built with")


def freeze_for_epoch(model: nn.Module, names: list[str], last_epochs: int, epoch: int, epochs: int) -> bool:
    """Freeze `names` when `epoch` (1-based) is one of the last `last_epochs` of `epochs`; True if so.
    Idempotent, so a resumed run freezes the same epochs."""
    if not names or epoch <= epochs - last_epochs:
        return False
    from timm.utils.model import freeze  # timm is a dependency; imported late as it is slow to import

    freeze(model, names, include_bn_running_stats=False)
    return True
