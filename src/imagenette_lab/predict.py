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

from imagenette_lab.data.dataset import BadImageError, Sample, SplitIndex, probe
from imagenette_lab.data.transforms import eval_transform
from imagenette_lab.errors import UsageError, UserError
from imagenette_lab.predictions import infer

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
        from imagenette_lab.runrecord import BEST, LAST, checkpoint_path

        for cand in (checkpoint_path(p, BEST), checkpoint_path(p, LAST), p / BEST, p / LAST):
            if cand.is_file():
                return cand
        raise UserError(f"{p} is a directory without a checkpoint (expected {checkpoint_path(p, BEST)})")
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


def predict(
    predictor: Predictor,
    inputs: Iterable[str | Path],
    top_k: int = 3,
    batch_size: int = 32,
    on_skip: Callable[[Skip], None] | None = None,
    *,
    workers: int = 2,
    amp: str = "auto",
    channels_last: bool = True,
) -> tuple[list[dict[str, Any]], list[Skip]]:
    """[{path, predictions: [{class, index, probability}, ...top_k]}] for every readable image, + the skips.

    One batched inference through `predictions.infer` (the same fast path as evaluation).
    """
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    files = list(iter_files(inputs))
    if not files:
        raise UserError("no files to classify (the directories are empty)")
    k = min(top_k, len(predictor.labels))
    size = int(predictor.data_cfg["input_size"][-1])
    draft = int(math.floor(size / float(predictor.data_cfg.get("crop_pct", 0.875))))
    skipped: list[Skip] = []

    def skip(s: Skip) -> None:
        skipped.append(s)
        if on_skip:
            on_skip(s)

    # Header check first (cheap, gives the reason); a file that fails to decode later is dropped by the loader.
    samples = []
    for path in files:
        try:
            samples.append(Sample(path, -1, *probe(path)))
        except BadImageError as e:
            skip(Skip(str(path), str(e)))
    results: list[dict[str, Any]] = []
    if samples:
        index = SplitIndex(Path("."), "files", list(predictor.labels), samples)
        preds = infer(predictor.model, index, eval_transform(predictor.data_cfg), predictor.labels,
                      batch_size=batch_size, workers=workers, device=predictor.device, amp=amp,
                      channels_last=channels_last, draft=draft, desc="predict", skip_errors=True,
                      tta=predictor.data_cfg.get("tta", "none"))
        for path in preds.meta["skipped"]:
            skip(Skip(path, "could not be decoded or preprocessed"))
        top_p, top_i = torch.from_numpy(preds.probs()).float().topk(k, dim=1)
        for path, ps, idx in zip(preds.paths, top_p.tolist(), top_i.tolist()):
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
