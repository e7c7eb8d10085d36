"""`train.freeze_modules` + `train.freeze_last_epochs`: FreezeOut-style training (Brock et al. 2017).

In the last epochs the named early submodules stop training. Their inputs need no gradient, so autograd
skips their whole backward, and the early layers run on the largest maps: on a 2-core Zen 4, bf16,
EfficientNet-B0 at 128 px, batch 64, freezing `base.features.0`-`3` (66k of 4M parameters) makes a
step ~34 % shorter. By then the one-cycle learning rate is small, so they would move little anyway.
Their BatchNorm layers stay in train mode and keep updating running statistics (timm's `freeze` with
`include_bn_running_stats=False`), so the state_dict keeps its keys and `recalibrate_bn` still works.
Under torchrun the DDP wrapper is rebuilt when the freeze starts (engine/distributed.py: `rewrap`).
"""

from __future__ import annotations

from torch import nn

from imagenette_lab.errors import UserError


def check_freeze(model: nn.Module, names: list[str]) -> None:
    """Refuse, before any training, names the model does not have."""
    known = dict(model.named_modules())
    for name in names:
        if not name or name not in known:
            some = ", ".join([n for n in known if 1 <= n.count(".") <= 2][:6])
            raise UserError(f"train.freeze_modules: no module '{name}' in this model (its modules: {some}, ...)")


def freeze_for_epoch(model: nn.Module, names: list[str], last_epochs: int, epoch: int, epochs: int) -> bool:
    """Freeze `names` when `epoch` (1-based) is one of the last `last_epochs` of `epochs`; True if so.
    Idempotent, so a resumed run freezes the same epochs."""
    if not names or epoch <= epochs - last_epochs:
        return False
    from timm.utils.model import freeze  # timm is a dependency; imported late as it is slow to import

    freeze(model, names, include_bn_running_stats=False)
    return True
