"""`evaluate`: score a train checkpoint (file or run dir) or any ImageNet-1k model on a split.

Writes the same bundle as training's final evaluation (Predictions.save). On a checkpoint the
defaults are the training run's own (batch size, amp, channels_last, val subset and seed), so on
the training val split it reproduces `<run>/eval/metrics.json` exactly.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from imagenette_lab.data.classes import display_name, imagenet_indices, load_class_map
from imagenette_lab.data.dataset import index_split
from imagenette_lab.data.transforms import eval_transform
from imagenette_lab.engine.evaluate import resolve_device
from imagenette_lab.errors import UsageError, UserError
from imagenette_lab.predictions import infer
from imagenette_lab.runrecord import CHECKPOINTS, HOLDOUT
from imagenette_lab.utils import prepare_out_dir, write_run_json

log = logging.getLogger(__name__)

SUMMARY = ("accuracy", "macro_precision", "macro_recall", "macro_f1")


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    out = {k: m[k] for k in SUMMARY}
    out["ci"] = {k: m["ci"][k] for k in SUMMARY} if "ci" in m else None
    return out


def evaluate(
    spec: str,
    root: str | Path,
    out: str | Path,
    *,
    split: str = "val",
    batch_size: int | None = None,
    workers: int = 2,
    device: str = "auto",
    amp: str | None = None,
    channels_last: bool | None = None,
    limit_per_class: int | None = None,
    weights: str | None = None,
    weights_file: str | None = None,
    class_map: str | Path | None = None,
    tta: str | None = None,
) -> dict[str, Any]:
    """Evaluate `spec` (checkpoint file, train run dir, or model name) on `<root>/<split>` into `out`."""
    from imagenette_lab.predict import _resolve_checkpoint

    started = time.time()
    if limit_per_class is not None and limit_per_class < 0:
        raise UsageError(f"--limit-per-class must be 0 (all) or more, got {limit_per_class}")
    dev = resolve_device(device)
    ckpt_path = _resolve_checkpoint(spec)
    if ckpt_path is not None:
        if weights is not None or weights_file is not None or class_map is not None:
            raise UsageError("--weights/--weights-file/--class-map are for an ImageNet model name; "
                             "a checkpoint holds its own weights and classes")
        return _evaluate_checkpoint(ckpt_path, root, out, split, batch_size, workers, dev, amp, channels_last,
                                    limit_per_class, started, tta)
    return _evaluate_imagenet(spec, root, out, split, batch_size or 64, workers, dev, amp or "auto",
                              True if channels_last is None else channels_last, limit_per_class or 0,
                              weights, weights_file, class_map, started, tta or "none")


def _evaluate_checkpoint(path: Path, root: str | Path, out: str | Path, split: str, batch_size: int | None,
                         workers: int, dev: Any, amp: str | None, channels_last: bool | None,
                         limit: int | None, started: float, tta: str | None = None) -> dict[str, Any]:
    from imagenette_lab.config import config_from_dict
    from imagenette_lab.engine.checkpoint import check_compatible, load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt["config"])
    found = index_split(root, split)
    # Same classes in the same order, or a one-line refusal: never a silent remapping of labels.
    check_compatible(ckpt, classes=found.classes, source=f"checkpoint {path}")
    if limit is None:  # the training run's own val subset when scoring its val split
        same_root = Path(root).expanduser().resolve() == Path(cfg.data.root).expanduser().resolve()
        same = split == cfg.data.val_split and same_root
        limit = cfg.data.val_limit_per_class if same else 0
    index = found.subset(limit, cfg.seed)
    model, info = model_from_checkpoint(ckpt, dev)
    out_dir = prepare_out_dir(out)
    preds = infer(model, index, eval_transform(info["data_cfg"]), info["class_names"],
                  batch_size=batch_size or cfg.data.batch_size, workers=workers, device=dev,
                  amp=amp or cfg.train.amp,
                  channels_last=cfg.model.channels_last if channels_last is None else channels_last,
                  desc="evaluate", name=cfg.name, meta={"checkpoint": str(path), "epoch": info.get("epoch")},
                  tta=tta or info["data_cfg"].get("tta", "none"))
    title = f"{cfg.name} (epoch {info.get('epoch')}) on {split}"
    metrics = preds.save(out_dir, title=title)
    # The same bundle as training's final evaluation: calibrated with the run's own held-out slice, if any.
    holdout = path.parent.parent / HOLDOUT
    if path.parent.name == CHECKPOINTS and (holdout / "predictions.npz").is_file():
        from imagenette_lab.calibration import calibrate_logits

        calibrate_logits(out_dir, preds.logits, preds.targets, holdout, title=title)
        metrics = json.loads((out_dir / "metrics.json").read_text())
    write_run_json(out_dir, "evaluate", f"evaluate_{cfg.name}", started, source=str(path), model=cfg.model.name,
                   checkpoint_epoch=info.get("epoch"), root=str(root), split=split, n_images=preds.n,
                   n_skipped=preds.meta["n_skipped"], skipped=preds.meta["skipped"],
                   images_per_s=preds.meta["images_per_s"], metrics=_summary(metrics),
                   fingerprint=preds.fingerprint)
    log.info("evaluate %s on %s/%s: %d images, accuracy %.4f [%.4f, %.4f]", path, root, split, preds.n,
             metrics["accuracy"], *metrics["ci"]["accuracy"])
    return metrics


def _evaluate_imagenet(name: str, root: str | Path, out: str | Path, split: str, batch_size: int, workers: int,
                       dev: Any, amp: str, channels_last: bool, limit: int, weights: str | None,
                       weights_file: str | None, class_map: str | Path | None, started: float,
                       tta: str = "none") -> dict[str, Any]:
    """An ImageNet-1k model: out/ holds the C-way (restricted) bundle, out/imagenet1000/ the 1000-way one."""
    from imagenette_lab.models.factory import create_imagenet_model, data_config

    index = index_split(root, split).subset(limit)
    cmap = load_class_map(class_map) if class_map is not None else None
    columns = imagenet_indices(index.classes, cmap)  # refuses folders that are not ImageNet classes
    names = [display_name(c) for c in index.classes]
    if len(set(names)) != len(names):
        names = list(index.classes)
    tag = "DEFAULT" if weights is None else (None if str(weights).lower() == "none" else weights)
    net = create_imagenet_model(name, weights=tag, weights_file=weights_file)
    dcfg = data_config(net, name, tag)
    draft = int(int(dcfg["input_size"][-1]) / float(dcfg.get("crop_pct", 0.875)))
    out_dir = prepare_out_dir(out)
    preds = infer(net, index, eval_transform(dcfg), names, columns=columns, batch_size=batch_size, workers=workers,
                  device=dev, amp=amp, channels_last=channels_last, draft=draft, desc="evaluate", name=name,
                  meta={"model": name, "weights": tag}, tta=tta)
    if preds.n == 0:
        raise UserError(f"none of the {len(index)} images in {index.root} could be decoded")
    metrics = preds.restrict().save(out_dir, title=f"{name} on {split}, restricted to {len(names)} classes")
    m1000 = preds.save(out_dir / "imagenet1000", title=f"{name} on {split}, 1000-way argmax")
    write_run_json(out_dir, "evaluate", f"evaluate_{name}", started, source=name, model=name, weights=tag,
                   root=str(root), split=split, n_images=preds.n, n_skipped=preds.meta["n_skipped"],
                   skipped=preds.meta["skipped"], images_per_s=preds.meta["images_per_s"],
                   metrics=_summary(metrics), metrics_1000way=_summary(m1000), fingerprint=preds.fingerprint)
    return metrics
