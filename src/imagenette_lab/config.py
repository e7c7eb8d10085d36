"""One typed config per run: dataclasses, loaded from YAML, every field overridable as `section.key=value`.

Built-in recipes live in `imagenette_lab/configs/*.yaml` and are addressed by name (`exp2_scratch`)
or by path. The resolved config is saved in each run directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from imagenette_lab.errors import UserError

CHOICES: dict[str, tuple[str, ...]] = {
    "data.augment": ("none", "baseline", "trivialaugment", "randaugment"),
    "data.tta": ("none", "flip"),
    "model.head": ("study", "linear"),
    "role": ("exp1", "exp2", "exp3"),
    "optim.name": ("adamw", "sgd"),
    "optim.scheduler": ("onecycle", "cosine", "constant"),
    "train.amp": ("auto", "bf16", "fp16", "off"),
    "train.monitor": ("val_acc", "val_f1", "val_loss"),
    "train.select": ("auto", "holdout", "last", "eval_split"),
    "train.loggers": ("csv", "jsonl", "tensorboard", "mlflow"),  # each list item
}


@dataclass
class DataConfig:
    root: str = "data/imagenette2-160"
    train_split: str = "train"
    val_split: str = "val"
    img_size: int = 128  # train crop; eval resizes to eval_size / eval_crop_pct then centre-crops
    eval_size: int = 0  # 0 = img_size; larger = FixRes-style eval/inference above the train size
    eval_crop_pct: float = 0.875
    tta: str = "none"  # flip = evaluation and predict average the logits of each image and its mirror
    augment: str = "baseline"  # random-resized-crop + flip, optionally + an auto-augment policy
    min_scale: float = 0.35  # RandomResizedCrop lower scale bound
    random_erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    batch_size: int = 64
    workers: int = 2
    limit_per_class: int = 0  # 0 = every image; >0 = a seeded subset per class (quick CPU runs)
    val_limit_per_class: int = 0
    cache: bool = False  # decode once into a uint8 tensor cache (imagenette-lab cache) and train from it
    cache_size: int = 0  # stored side of the cache; 0 = eval size / eval_crop_pct (eval from it is exact)
    progressive_min_size: int = 0  # >0: fastai-style progressive resizing, train crops grow from this size ...
    progressive_frac: float = 0.5  # ... to img_size over this fraction of the main stage's epochs
    holdout_frac: float = 0.05  # stratified, seeded slice of train that selects the checkpoint (0 = none)

    @property
    def eval_px(self) -> int:
        """The side evaluated and inferred at."""
        return self.eval_size or self.img_size


@dataclass
class ModelConfig:
    name: str = "efficientnet_b0"
    pretrained: bool = False
    weights: str | None = None  # torchvision weights tag (IMAGENET1K_V1 ...); None = the default
    weights_file: str | None = None  # local ImageNet checkpoint instead of a download
    freeze_base: bool = False
    head: str = "study"  # study = BatchNorm -> Dropout -> Linear (the paper's head)
    dropout: float = 0.2
    drop_path: float | None = None  # stochastic-depth rate (timm drop_path_rate); None = the model's default
    zero_init_last: bool = False  # random init: each residual block's last BatchNorm starts at 0 (identity)
    channels_last: bool = True


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    scheduler: str = "onecycle"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_accum: int = 1
    grad_clip: float = 0.0  # 0 = off


@dataclass
class TrainConfig:
    epochs: int = 20
    amp: str = "auto"  # auto = fp16 AMP on CUDA; on CPU bf16 only with native bf16 (AMX/AVX512-BF16), else fp32
    device: str = "auto"
    feature_cache: bool = False  # frozen base: compute base features once, train the head on them
    cache_views: int = 1  # augmented views per train image in the feature cache (1 = eval view only)
    finetune_epochs: int = 0  # > 0: unfreeze the base for a second, low-LR stage (disables the cache)
    finetune_lr: float = 1e-4
    eval_every: int = 1
    # > 0: after training, BatchNorm statistics re-estimated on this many train images' eval views
    # (engine/recalibrate.py); the reported checkpoint keeps them
    recalibrate_bn: int = 0
    # FreezeOut-style (Brock et al. 2017): these submodules (model.named_modules() names, e.g. base.features.0)
    # stop training for the last freeze_last_epochs epochs: no backward through the early, large maps
    freeze_modules: list[str] = field(default_factory=list)
    freeze_last_epochs: int = 0
    explain: bool = True  # Grad-CAM figures of the final evaluation (gradcam_grid.png, top_losses_cam.png)
    monitor: str = "val_acc"  # the metric that picks the `best` checkpoint, computed on the selection split
    # auto = best epoch on the holdout (last epoch without one); eval_split selects on val: explicit only
    select: str = "auto"
    log_every: int = 20  # batches between progress-bar metric refreshes
    # Files under checkpoints/: comma list of last, best, prev (last.pt.prev), epochs (epoch_NNN.pt), or all.
    checkpoints_keep: str = "last,best"
    compile: bool = False  # torch.compile the training forward (benchmarks/bench_train.py: measure first)
    sync_bn: bool = False  # under torchrun on GPUs: BatchNorm statistics over the global batch
    # Per-epoch metric sinks (tracking.py): csv/jsonl = history.csv/.jsonl in the run folder;
    # tensorboard = event files in <run>/tensorboard; mlflow = params, metrics, artifacts.
    loggers: list[str] = field(default_factory=lambda: ["csv", "jsonl"])
    mlflow_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else MLflow's default (./mlruns)
    mlflow_experiment: str = "imagenette-lab"


@dataclass
class RunConfig:
    name: str = "run"
    role: str | None = None  # the study experiment this run stands for (exp1/exp2/exp3), or unset
    stage: str | None = None  # the `reproduce` stage that made it, unset when run by hand
    seed: int = 0
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SECTIONS = ("data", "model", "optim", "train")


def builtin_configs() -> list[str]:
    root = resources.files("imagenette_lab.configs")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _coerce(key: str, typ: Any, value: Any) -> Any:
    """Check/convert one value against its dataclass field type (str | None, int, float, bool, str)."""
    if isinstance(typ, str):  # postponed annotations
        typ = eval(typ, vars(typing) | {"types": types})  # noqa: S307 - our own annotations only
    if typing.get_origin(typ) is list:
        (item,) = typing.get_args(typ)
        if isinstance(value, str):  # `--set train.loggers=csv,mlflow`
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}' expects a list, got {value!r}")
        return [_coerce(key, item, v) for v in value]
    args = typing.get_args(typ)
    if type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        typ = next(a for a in args if a is not type(None))
    try:
        if typ is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "y", "n", "1", "0"):
                return value.lower() in ("true", "yes", "on", "y", "1")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if isinstance(value, bool):
            # YAML 1.1 reads unquoted off/on/no/yes as booleans; `amp: off` means the string.
            word = "on" if value else "off"
            if word in CHOICES.get(key, ()):
                return word
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"config key '{key}' expects {typ.__name__}, got {value!r}") from None


def _apply(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    by_name = {f.name: f for f in fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in by_name:
            raise UserError(f"unknown config key '{full}'; valid keys: {', '.join(sorted(by_name))}")
        f = by_name[key]
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"config key '{full}' must be a mapping")
            _apply(current, value, prefix=f"{full}.")
            continue
        value = _coerce(full, f.type, value)
        for v in value if isinstance(value, list) else [value]:
            if full in CHOICES and v is not None and v not in CHOICES[full]:
                raise UserError(f"config key '{full}' must be one of {', '.join(CHOICES[full])}, got {v!r}")
        setattr(obj, key, value)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["train.epochs=5", "model.name=resnet18"]` -> nested dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        try:
            # on/off/yes/no stay strings here (YAML 1.1 would make them booleans); bool fields accept them.
            word = raw.strip().lower() in ("on", "off", "yes", "no", "y", "n")
            node[parts[-1]] = raw.strip() if word else (yaml.safe_load(raw) if raw.strip() else None)
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return out


def _read_yaml(source: str | Path) -> dict[str, Any]:
    path = Path(source)
    if not path.exists() and not str(source).endswith((".yaml", ".yml")):
        name = str(source)
        if name not in builtin_configs():
            raise UserError(
                f"config '{source}' is neither a file nor a built-in recipe "
                f"({', '.join(builtin_configs())})"
            )
        text = resources.files("imagenette_lab.configs").joinpath(f"{name}.yaml").read_text()
    else:
        try:
            text = path.read_text()
        except OSError as e:
            raise UserError(f"cannot read config {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config {source} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {source} must be a YAML mapping")
    return data


def load_config(
    source: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults <- recipe (YAML file, built-in name, or a dict such as a checkpoint's config)
    <- `extra` dict <- `section.key=value` overrides."""
    cfg = RunConfig()
    if isinstance(source, dict):
        _apply(cfg, source)
    elif source is not None:
        _apply(cfg, _read_yaml(source))
    if extra:
        _apply(cfg, extra)
    if overrides:
        _apply(cfg, parse_overrides(overrides))
    return cfg


def keyword_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Python-API overrides -> the nested dict `load_config(extra=...)` takes.

    Keys are a dotted path (`{"train.epochs": 3}`), a top-level field (`name`, `seed`, `out_dir`),
    a section holding a dict (`data={"root": ...}`), or a field name that only one section has
    (`epochs=3` is train.epochs, `lr=0.01` is optim.lr); an ambiguous or unknown name is an error.
    """
    top = {f.name for f in fields(RunConfig)}
    owners: dict[str, list[str]] = {}
    for section in SECTIONS:
        for f in fields(getattr(RunConfig(), section)):
            owners.setdefault(f.name, []).append(section)
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if "." in key:
            parts = key.split(".")
        elif key in top:
            parts = [key]
        elif len(owners.get(key, [])) == 1:
            parts = [owners[key][0], key]
        elif key in owners:
            options = ", ".join(f"'{s}.{key}'" for s in owners[key])
            raise UserError(f"override '{key}' is ambiguous; pass one of {options} as a dotted key")
        else:
            close = difflib.get_close_matches(key, sorted(top | set(owners)), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"unknown config key '{key}'{hint}")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"override '{key}' conflicts with another override of '{p}'")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return out


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    cfg = RunConfig()
    _apply(cfg, data)
    return cfg


def save_config(cfg: RunConfig, path: str | Path) -> None:
    from imagenette_lab.utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
