"""Zero-shot evaluation: an ImageNet-1k classifier scored on an image-folder dataset without training.

The study's Experiment 1 reported accuracy .827 with macro F1 .032 - impossible together, the mark
of scoring 1000-way ImageNet indices against 0..9 dataset labels. Here each class folder is mapped
to its ImageNet index and the same logits are scored two ways:

* restricted   - argmax over the C dataset classes' logits only (a proper C-way zero-shot classifier);
* imagenet1000 - argmax over all 1000 classes; a prediction that is one of the C classes maps back
                 to that dataset label, anything else is OTHER and counts as an error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from imagenette_lab import metrics as M
from imagenette_lab.data.classes import display_name, imagenet_indices, imagenet_labels, load_class_map
from imagenette_lab.data.dataset import index_split
from imagenette_lab.data.transforms import eval_transform
from imagenette_lab.engine.evaluate import resolve_device
from imagenette_lab.errors import UserError
from imagenette_lab.models.factory import create_imagenet_model, data_config
from imagenette_lab.predictions import infer
from imagenette_lab.utils import atomic_write_json, atomic_write_text, prepare_out_dir, write_run_json

log = logging.getLogger(__name__)

NUM_IMAGENET = 1000
VARIANTS = ("restricted", "imagenet1000")


@dataclass
class ZeroShotPredictions:
    """Both scorings of one (N, 1000) logit matrix against C dataset classes."""

    restricted_pred: np.ndarray  # (N,) in 0..C-1
    restricted_probs: np.ndarray  # (N, C) softmax over the C dataset logits
    top1_imagenet: np.ndarray  # (N,) 1000-way argmax, ImageNet index
    imagenet1000_pred: np.ndarray  # (N,) in 0..C-1 or OTHER
    imagenet1000_probs: np.ndarray  # (N, C) 1000-way softmax mass of each dataset class
    imagenet1000_confidence: np.ndarray  # (N,) 1000-way probability of the top-1 class
    top5_imagenet_hit: np.ndarray  # (N,) true class's ImageNet index among the 1000-way top 5


def zero_shot_predictions(
    logits: torch.Tensor, class_imagenet_idx: list[int], y_true: np.ndarray | None = None
) -> ZeroShotPredictions:
    """Score (N, 1000) `logits` against the dataset classes whose ImageNet indices are given."""
    if logits.ndim != 2 or logits.shape[1] != NUM_IMAGENET:
        raise UserError(
            f"model must output {NUM_IMAGENET} ImageNet logits per image, got shape {tuple(logits.shape)}"
        )
    if len(set(class_imagenet_idx)) != len(class_imagenet_idx):
        raise UserError("two class folders map to the same ImageNet index; fix --class-map")
    logits = logits.float()
    idx = torch.as_tensor(class_imagenet_idx, dtype=torch.int64)
    restricted = logits[:, idx]
    r_probs = torch.softmax(restricted, dim=1)
    full_probs = torch.softmax(logits, dim=1)
    top1 = logits.argmax(dim=1)
    # ImageNet index -> dataset label; every other index is OTHER.
    back = torch.full((NUM_IMAGENET,), M.OTHER, dtype=torch.int64)
    back[idx] = torch.arange(len(class_imagenet_idx))
    top5 = logits.topk(5, dim=1).indices
    if y_true is not None:
        true_imagenet = idx[torch.as_tensor(y_true, dtype=torch.int64)]
        hit5 = (top5 == true_imagenet[:, None]).any(dim=1).numpy()
    else:
        hit5 = np.zeros(len(logits), dtype=bool)
    return ZeroShotPredictions(
        restricted_pred=restricted.argmax(dim=1).numpy(),
        restricted_probs=r_probs.numpy().astype(np.float64),
        top1_imagenet=top1.numpy(),
        imagenet1000_pred=back[top1].numpy(),
        imagenet1000_probs=full_probs[:, idx].numpy().astype(np.float64),
        imagenet1000_confidence=full_probs.max(dim=1).values.numpy().astype(np.float64),
        top5_imagenet_hit=hit5,
    )


def _class_names(classes: list[str]) -> list[str]:
    names = [display_name(c) for c in classes]
    # Two folders can share a readable name (e.g. mapped ones); fall back to the unique folder names.
    return names if len(set(names)) == len(names) else list(classes)


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "top5_accuracy", "other_predictions")
    return {k: m[k] for k in keys if k in m}


def run_zero_shot(
    root: str | Path,
    out: str | Path,
    model: str = "resnet50",
    weights: str | None = "DEFAULT",
    weights_file: str | Path | None = None,
    split: str = "val",
    class_map: str | Path | dict[str, int] | None = None,
    batch_size: int = 64,
    workers: int = 2,
    amp: str = "auto",
    channels_last: bool = True,
    device: str = "auto",
    limit_per_class: int = 0,
    holdout_per_class: int = 20,
    explain: bool = True,
) -> dict[str, Any]:
    """Evaluate an ImageNet-1k model on `<root>/<split>` both ways; write `out/` and return metrics.json.

    holdout_per_class: seeded train images per class scored into `out/holdout/` (the temperature of
    the restricted variant's calibration is fitted on them; 0 = none). explain: Grad-CAM figures.
    """
    started = time.time()
    if limit_per_class < 0:
        raise UserError(f"limit per class must be 0 (all) or more, got {limit_per_class}")
    dev = resolve_device(device)
    out_dir = prepare_out_dir(out)
    index = index_split(root, split).subset(limit_per_class)
    cmap = class_map if isinstance(class_map, dict) or class_map is None else load_class_map(class_map)
    class_idx = imagenet_indices(index.classes, cmap)  # refuses non-ImageNet folders, names --class-map
    names = _class_names(index.classes)

    net = create_imagenet_model(model, weights=weights, weights_file=weights_file)
    dcfg = data_config(net, model, weights)
    size = int(dcfg["input_size"][-1])
    # JPEG draft decoding only shrinks by powers of two while staying >= the requested size: lossless here.
    draft = int(size / float(dcfg.get("crop_pct", 0.875)))
    # One inference, all 1000 logits kept; `columns` maps each class folder to its ImageNet logit.
    preds = infer(net, index, eval_transform(dcfg), names, columns=class_idx, batch_size=batch_size,
                  workers=workers, device=dev, amp=amp, channels_last=channels_last, draft=draft,
                  desc="zero-shot", name=f"zero_shot_{model}", meta={"model": model, "weights": weights})
    if preds.n == 0:
        raise UserError(f"none of the {len(index)} images in {index.root} could be decoded")
    y_true, paths = preds.targets, preds.paths
    zs = zero_shot_predictions(torch.from_numpy(preds.logits), class_idx, y_true)  # checks the shape
    labels_1000 = imagenet_labels()

    results: dict[str, dict[str, Any]] = {}
    results["restricted"] = preds.restrict().save(
        out_dir / "restricted", title=f"{model} zero-shot, restricted to {len(names)} classes")
    _calibrate_and_explain(out_dir, root, split, index, net, dcfg, preds.restrict(), class_idx=class_idx,
                           holdout_per_class=holdout_per_class, explain=explain, model=model,
                           infer_kw=dict(batch_size=batch_size, workers=workers, device=dev, amp=amp,
                                         channels_last=channels_last, draft=draft))
    # Top-5 of the 1000-way view is ImageNet top-5: the true class among all 1000 outputs' top 5.
    results["imagenet1000"] = m1000 = preds.save(
        out_dir / "imagenet1000", title=f"{model} zero-shot, 1000-way argmax",
        extra_columns={
            "imagenet_index": zs.top1_imagenet.tolist(),
            "imagenet_label": [labels_1000[i] for i in zs.top1_imagenet],
        },
    )

    skipped = [{"path": s.path, "reason": s.reason} for s in index.skipped]
    skipped += [{"path": p, "reason": "could not be decoded"} for p in preds.meta["skipped"]]
    _write_predictions(out_dir / "predictions.csv", paths, y_true, zs, names, labels_1000)

    combined = {
        **results,
        "model": model,
        "weights": weights,
        "weights_file": str(weights_file) if weights_file else None,
        "data_config": dcfg,
        "root": str(Path(root).expanduser()),
        "split": split,
        "classes": index.classes,
        "class_names": names,
        "imagenet_indices": class_idx,
        "n_images": preds.n,
        "device": str(dev),
        "amp": amp,
        "seconds": preds.meta["seconds"],
        "images_per_s": preds.meta["images_per_s"],
        "n_skipped": len(skipped),
        "skipped": skipped,
    }
    atomic_write_json(out_dir / "metrics.json", combined)
    atomic_write_text(out_dir / "summary.txt", _summary_text(combined))
    log.info(
        "zero-shot %s on %d images: %.1f s, %.1f img/s; restricted acc %.4f macro-F1 %.4f; "
        "1000-way acc %.4f macro-F1 %.4f (%d OTHER); %d skipped",
        model, preds.n, preds.meta["seconds"], preds.meta["images_per_s"],
        results["restricted"]["accuracy"], results["restricted"]["macro_f1"],
        m1000["accuracy"], m1000["macro_f1"], m1000["other_predictions"], len(skipped),
    )
    write_run_json(
        out_dir, "zero_shot", f"zero_shot_{model}", started,
        model=model, weights=weights, weights_file=combined["weights_file"],
        metrics={v: _summary(results[v]) for v in VARIANTS},
        images_per_s=combined["images_per_s"], n_images=preds.n, n_skipped=len(skipped),
    )
    return combined


def _calibrate_and_explain(out_dir: Path, root: str | Path, split: str, index: Any, net: torch.nn.Module,
                           dcfg: dict[str, Any], restricted: Any, *, class_idx: list[int], holdout_per_class: int,
                           explain: bool, model: str, infer_kw: dict[str, Any]) -> None:
    """Restricted variant: temperature fitted on seeded *train* images (never the evaluated split),
    saved as out/holdout/predictions.npz, and Grad-CAM of the restricted prediction's ImageNet logit."""
    from imagenette_lab.calibration import HOLDOUT_DIR, save_logits
    from imagenette_lab.diagnostics import diagnose_eval

    holdout_dir, h_index = None, None
    if holdout_per_class > 0 and split != "train" and (Path(root).expanduser() / "train").is_dir():
        try:
            h_index = index_split(root, "train", classes=index.classes).subset(holdout_per_class, seed=0)
        except UserError as e:  # a train split with other classes: calibrate without a temperature
            log.warning("no held-out train slice for calibration: %s", e)
    if h_index is not None:
        h = infer(net, h_index, eval_transform(dcfg), restricted.class_names, columns=class_idx,
                  desc="held-out train", name="holdout", **infer_kw).restrict()
        if h.n:
            holdout_dir = out_dir / HOLDOUT_DIR
            save_logits(holdout_dir, h.logits, h.targets, h.indices, h.paths, h.class_names)
    diagnose_eval(out_dir / "restricted", net, dcfg, restricted.logits, restricted.targets, restricted.paths,
                  restricted.class_names, holdout_dir=holdout_dir, explain=explain,
                  title=f"{model} zero-shot, restricted", output_index=class_idx)


def _write_predictions(
    path: Path,
    paths: list[str],
    y_true: np.ndarray,
    zs: ZeroShotPredictions,
    names: list[str],
    labels_1000: tuple[str, ...],
) -> None:
    named = np.array(names + [M.other_name(names)], dtype=object)  # index OTHER (-1) picks the last
    rows = np.arange(len(y_true))
    frame = pd.DataFrame(
        {
            "path": paths,
            "true": named[y_true],
            "predicted_restricted": named[zs.restricted_pred],
            "confidence": zs.restricted_probs[rows, zs.restricted_pred],
            "predicted_1000way": named[zs.imagenet1000_pred],
            "predicted_1000way_label": [labels_1000[i] for i in zs.top1_imagenet],
            "predicted_1000way_index": zs.top1_imagenet,
            "confidence_1000way": zs.imagenet1000_confidence,
            "correct_restricted": zs.restricted_pred == y_true,
            "correct_1000way": zs.imagenet1000_pred == y_true,
        }
    )
    atomic_write_text(path, frame.to_csv(index=False))


def _summary_text(c: dict[str, Any]) -> str:
    lines = [
        f"zero-shot {c['model']} (weights {c['weights_file'] or c['weights']}) on {c['root']}/{c['split']}: "
        f"{c['n_images']} images, {c['images_per_s']} img/s, {c['n_skipped']} skipped",
        f"{'variant':<14}{'accuracy':>10}{'macro_P':>10}{'macro_R':>10}{'macro_F1':>10}{'top5':>8}{'other':>7}",
    ]
    for v in VARIANTS:
        m = c[v]
        lines.append(
            f"{v:<14}{m['accuracy']:>10.4f}{m['macro_precision']:>10.4f}{m['macro_recall']:>10.4f}"
            f"{m['macro_f1']:>10.4f}{m.get('top5_accuracy', float('nan')):>8.4f}{m['other_predictions']:>7d}"
        )
    return "\n".join(lines) + "\n"
