"""Split a torchvision backbone at its global pooling: (input -> spatial maps, maps -> pooled vector).

timm models expose this split themselves (`forward_features` / `forward_head`); torchvision models
only have `forward`. Rather than keep a table of per-family forward code, the backbone is traced with
torch.fx and cut just before its last global pooling op (AdaptiveAvgPool2d/MaxPool2d, or
`x.mean((2, 3))` / `F.adaptive_avg_pool2d`), which covers ResNet, EfficientNet, MobileNet, RegNet,
ConvNeXt, DenseNet, VGG, Swin, ... Both halves call the backbone's own submodules, so they share its
parameters and device. Python branches on `self.training` in a module *with* children are fixed at
trace time, so callers keep one split per mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from imagenette_lab.errors import UserError

_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_POOL_FUNCTIONS = (F.adaptive_avg_pool2d, F.adaptive_max_pool2d)
_SPATIAL_DIMS = ({2, 3}, {-2, -1})


class _NoSplit(Exception):
    pass


class _LeafTracer(fx.Tracer):
    """Calls every childless module as a module, so train/eval branches inside it (StochasticDepth,
    DropPath, ...) are decided at run time, not frozen at trace time."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return next(m.children(), None) is None or super().is_leaf_module(m, qualname)


def _is_global_pool(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_module":
        return isinstance(gm.get_submodule(str(n.target)), _POOL_MODULES)
    if n.op == "call_function" and n.target in _POOL_FUNCTIONS:
        return True
    if (n.op == "call_method" and n.target == "mean") or (n.op == "call_function" and n.target is torch.mean):
        dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        return isinstance(dims, (tuple, list)) and set(dims) in _SPATIAL_DIMS
    return False


def split_at_pool(backbone: nn.Module, what: str = "model") -> tuple[fx.GraphModule, fx.GraphModule]:
    """(trunk, pool_head): trunk(x) = the maps fed to the global pooling; pool_head(maps) = backbone(x)."""
    try:
        gm = fx.GraphModule(backbone, _LeafTracer().trace(backbone))
    except Exception as e:  # noqa: BLE001 - data-dependent control flow: not traceable
        raise UserError(f"cannot separate {what}'s feature maps from its pooling ({type(e).__name__}: {e})") from None
    nodes = list(gm.graph.nodes)
    # The last one: earlier ones are squeeze-excitation gates inside blocks (EfficientNet, RegNetY).
    pool = next((n for n in reversed(nodes) if _is_global_pool(gm, n)), None)
    if pool is None or not isinstance(pool.args[0], fx.Node):
        raise UserError(f"{what} has no global pooling over a spatial feature map (a ViT-like model?)")
    maps = pool.args[0]

    trunk_graph, env = fx.Graph(), {}
    for n in nodes[: nodes.index(pool)]:
        env[n] = trunk_graph.node_copy(n, lambda a: env[a])
    trunk_graph.output(env[maps])

    head_graph = fx.Graph()
    env2 = {maps: head_graph.placeholder("maps")}

    def look(a: fx.Node) -> fx.Node:
        if a not in env2:
            if a.op != "get_attr":  # the head needs something computed before the maps
                raise _NoSplit
            env2[a] = head_graph.node_copy(a)
        return env2[a]

    try:
        for n in nodes[nodes.index(pool):]:
            env2[n] = head_graph.node_copy(n, look)
    except _NoSplit:
        raise UserError(f"{what}'s layers after the pooling use more than the feature maps; cannot split it") from None
    trunk = fx.GraphModule(backbone, trunk_graph)
    trunk.graph.eliminate_dead_code()  # what only the pooled branch needed
    trunk.recompile()
    return trunk, fx.GraphModule(backbone, head_graph)
