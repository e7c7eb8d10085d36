"""Classify image files with a trained checkpoint or an ImageNet-1k model: top-k classes + probabilities.

Inputs are files and/or directories (walked recursively, symlinked folders not followed). Anything
that does not decode as an image is skipped with a message and counted; only when nothing at all
is readable is that an error.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imagenette_lab.data.dataset import BadImageError, load_rgb
from imagenette_lab.data.transforms import eval_transform
from imagenette_lab.errors import UsageError, UserError

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass
class Predictor:
    model: nn.Module
    labels: list[str]
    data_cfg: dict[str, Any]
    source: str  # what was loaded, for messages
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


@dataclass
class Skip:
    path: str
    reason: str


def _resolve_checkpoint(spec: str) -> Path | None:
    """A checkpoint file for `spec`, a train run dir's checkpoints/best.pt, or None for a model name."""
    p = Path(spec).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for name in ("checkpoints/best.pt", "checkpoints/last.pt", "best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise UserError(f"{p} is a directory without a checkpoint (expected {p / 'checkpoints' / 'best.pt'})")
    if p.suffix.lower() in CHECKPOINT_SUFFIXES or (os.sep in spec and ":" not in spec):
        raise UserError(f"checkpoint {p} does not exist")
    return None


def load_predictor(
    spec: str,
    weights: str | None = None,
    weights_file: str | None = None,
    device: str | torch.device = "cpu",
) -> Predictor:
    """A `train` checkpoint (file, or run directory), an exported .onnx file (onnxruntime) or an
    ImageNet-1k model name (timm/torchvision)."""
    dev = torch.device(device)
    if str(spec).lower().endswith(".onnx"):
        from imagenette_lab.onnx_backend import load_onnx_predictor

        return load_onnx_predictor(spec, dev)
    ckpt = _resolve_checkpoint(spec)
    if ckpt is not None:
        if weights is not None or weights_file is not None:
            raise UsageError("--weights/--weights-file choose ImageNet weights for a model name; "
                             "a checkpoint already holds its weights")
        from imagenette_lab.engine.checkpoint import model_from_checkpoint

        model, info = model_from_checkpoint(ckpt, dev)
        labels = [str(x) for x in (info.get("class_names") or info.get("classes") or [])]
        data_cfg = dict(info["data_cfg"])
        source = str(ckpt)
    else:
        from imagenette_lab.data.classes import imagenet_labels
        from imagenette_lab.models.factory import create_imagenet_model, data_config

        tag = "DEFAULT" if weights is None else (None if str(weights).lower() == "none" else weights)
        model = create_imagenet_model(spec, weights=tag, weights_file=weights_file)
        data_cfg = dict(data_config(model, spec, tag))
        labels = list(imagenet_labels())
        source = spec
    model.to(dev).eval()
    return Predictor(model, labels, data_cfg, source, dev)


def iter_files(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Files named directly, then every non-hidden file under each directory (sorted, no symlink loops)."""
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for f in sorted(filenames):
                    if not f.startswith("."):
                        yield Path(dirpath) / f
        elif p.exists():
            yield p
        else:
            raise UserError(f"{p} does not exist")


def _batches(paths: Iterable[Path], transform: Callable, draft: int | None, batch_size: int,
             on_skip: Callable[[Skip], None]) -> Iterator[tuple[list[Path], torch.Tensor]]:
    batch_paths: list[Path] = []
    tensors: list[torch.Tensor] = []
    for path in paths:
        try:
            img = load_rgb(path, draft)
        except BadImageError as e:
            reason = str(e)
            if "cannot identify image file" in reason:
                reason = "not an image"
            on_skip(Skip(str(path), reason))
            continue
        try:
            tensors.append(transform(img))
        except Exception as e:  # noqa: BLE001 - e.g. a 1x1 image the crop cannot handle
            on_skip(Skip(str(path), f"cannot preprocess: {e}"))
            continue
        batch_paths.append(path)
        if len(tensors) == batch_size:
            yield batch_paths, torch.stack(tensors)
            batch_paths, tensors = [], []
    if tensors:
        yield batch_paths, torch.stack(tensors)


def predict(
    predictor: Predictor,
    inputs: Iterable[str | Path],
    top_k: int = 3,
    batch_size: int = 32,
    on_skip: Callable[[Skip], None] | None = None,
) -> tuple[list[dict[str, Any]], list[Skip]]:
    """[{path, predictions: [{class, probability}, ...top_k]}] for every readable image, + the skips."""
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    files = list(iter_files(inputs))
    if not files:
        raise UserError("no files to classify (the directories are empty)")
    k = min(top_k, len(predictor.labels))
    transform = eval_transform(predictor.data_cfg)
    size = int(predictor.data_cfg["input_size"][-1])
    draft = int(math.floor(size / float(predictor.data_cfg.get("crop_pct", 0.875))))
    skipped: list[Skip] = []

    def skip(s: Skip) -> None:
        skipped.append(s)
        if on_skip:
            on_skip(s)

    results: list[dict[str, Any]] = []
    with torch.inference_mode():
        for paths, x in _batches(files, transform, draft, batch_size, skip):
            logits = predictor.model(x.to(predictor.device))
            if logits.ndim != 2 or logits.shape[1] != len(predictor.labels):
                raise UserError(
                    f"{predictor.source} outputs {tuple(logits.shape[1:])} scores per image but has "
                    f"{len(predictor.labels)} class names"
                )
            probs = torch.softmax(logits.float(), dim=1).cpu()
            top_p, top_i = probs.topk(k, dim=1)
            for path, ps, idx in zip(paths, top_p.tolist(), top_i.tolist()):
                results.append({
                    "path": str(path),
                    "predictions": [{"class": predictor.labels[i], "index": int(i), "probability": float(p)}
                                    for p, i in zip(ps, idx)],
                })
    if not results:
        raise UserError(f"none of the {len(files)} file(s) could be read as an image")
    return results, skipped


def format_table(results: list[dict[str, Any]]) -> str:
    """Human-readable: the path, then one `probability  class` line per prediction."""
    lines: list[str] = []
    for r in results:
        lines.append(r["path"])
        for rank, p in enumerate(r["predictions"], 1):
            lines.append(f"  {rank}. {p['probability'] * 100:6.2f}%  {p['class']}")
    return "\n".join(lines)


def print_skip(s: Skip) -> None:
    print(f"skipping {s.path} ({s.reason})", file=sys.stderr)
