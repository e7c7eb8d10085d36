"""Training checkpoints: atomic save, safe load, resume fallback and rebuilding a model for predict.

A checkpoint is a plain dict of tensors and primitives (`torch.load(weights_only=True)` can read
it, so loading never runs pickled code): model/optimizer/scheduler/scaler state, progress
(stage, epoch, step within the epoch), the best monitored value, RNG states, the resolved config,
the class folders + readable names, the preprocessing `data_cfg` and the history so far.
"""

from __future__ import annotations

import io
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imagenette_lab.errors import UserError
from imagenette_lab.utils import atomic_write_bytes, safe_torch_load

log = logging.getLogger(__name__)

FORMAT = "imagenette-lab/checkpoint"
VERSION = 1
LAST, BEST, PREV = "last.pt", "best.pt", "last.pt.prev"


# ----------------------------------------------------------------------------- RNG state
def capture_rng() -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors/lists (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": str(np_state[0]),
            "state": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------- save / load
def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def serialize(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buf)
    return buf.getvalue()


def save_checkpoint(
    state: dict[str, Any], path: str | Path, *, keep_prev: bool = False, copies: tuple[Path, ...] = ()
) -> None:
    """Write atomically (temp file + rename). With `keep_prev` the old file becomes `<name>.prev`.

    The new bytes are complete on disk before the old file is moved aside, so at every instant
    either `path` or `path.prev` is a good checkpoint. `copies` get the same bytes (e.g. best.pt).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = serialize(state)
    tmp = path.with_name(f".{path.name}.new")
    atomic_write_bytes(tmp, data)
    if keep_prev and path.exists():
        os.replace(path, path.with_name(path.name + ".prev"))
    os.replace(tmp, path)
    for extra in copies:
        atomic_write_bytes(extra, data)


# train.checkpoints_keep: which files a run keeps. last.pt always (resume needs it); last.pt.prev
# exists while a new last.pt is written and is deleted after unless "prev" is kept.
KEEP_CHOICES = ("last", "best", "prev", "epochs")


def parse_keep(spec: str) -> frozenset[str]:
    """"last,best" -> {"last", "best"}; "all" = last, best, prev and one file per epoch."""
    tokens = {t.strip().lower() for t in str(spec).split(",") if t.strip()}
    if "all" in tokens:
        tokens = (tokens - {"all"}) | set(KEEP_CHOICES)
    bad = sorted(tokens - set(KEEP_CHOICES))
    if bad or not tokens:
        raise UserError(f"train.checkpoints_keep must be a comma list of {', '.join(KEEP_CHOICES)} or 'all' "
                        f"(e.g. last,best), got {spec!r}")
    return frozenset(tokens | {"last"})


def epoch_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def save_retained(state: dict[str, Any], cdir: Path, keep: frozenset[str], *, best: bool,
                  epoch: int | None = None) -> Path:
    """Save last.pt (+ best.pt / epoch_NNN.pt copies per `keep`); drop last.pt.prev unless kept.

    `epoch` is given for a completed epoch (None for a mid-epoch interrupt checkpoint)."""
    copies = []
    if best and "best" in keep:
        copies.append(cdir / BEST)
    if epoch is not None and "epochs" in keep:
        copies.append(cdir / epoch_checkpoint_name(epoch))
    save_checkpoint(state, cdir / LAST, keep_prev=True, copies=tuple(copies))
    if "prev" not in keep:
        (cdir / PREV).unlink(missing_ok=True)  # last.pt is complete (fsync'd): prev has done its job
    return cdir / LAST


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU without executing pickled code; bad files -> one-line UserError."""
    ckpt = safe_torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not an imagenette-lab training checkpoint")
    if ckpt.get("version", 0) > VERSION:
        raise UserError(
            f"checkpoint {path} has format version {ckpt['version']}; this imagenette-lab reads "
            f"up to {VERSION} (upgrade imagenette-lab)"
        )
    return ckpt


def find_resume_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The newest readable progress checkpoint of a run: last.pt, else last.pt.prev (with a warning)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"cannot resume: run directory {run_dir} does not exist")
    cdir = checkpoint_dir(run_dir)
    candidates = [cdir / LAST, cdir / PREV]
    present = [p for p in candidates if p.is_file()]
    if not present:
        raise UserError(f"cannot resume: {run_dir} has no checkpoint ({cdir / LAST} not found)")
    errors = []
    for p in present:
        try:
            ckpt = load_checkpoint(p)
        except UserError as e:
            errors.append(str(e))
            log.warning("%s; trying the previous checkpoint", e)
            continue
        if p.name != LAST:
            log.warning("resuming from the previous good checkpoint %s", p)
        return p, ckpt
    raise UserError(f"cannot resume from {run_dir}: no readable checkpoint ({'; '.join(errors)})")


# ----------------------------------------------------------------------------- compatibility
def check_compatible(
    ckpt: dict[str, Any],
    *,
    model_name: str | None = None,
    head: str | None = None,
    classes: list[str] | None = None,
    source: str = "checkpoint",
) -> None:
    """Refuse a checkpoint of another architecture or other classes, naming both sides."""
    arch = ckpt.get("arch", {})
    if model_name is not None and (arch.get("name") != model_name or (head and arch.get("head") != head)):
        raise UserError(
            f"{source} holds a {arch.get('name')} model (head {arch.get('head')}), but the config asks "
            f"for {model_name} (head {head}); use a matching --config or a new run directory"
        )
    if classes is not None and list(ckpt.get("classes", [])) != list(classes):
        theirs, ours = list(ckpt.get("classes", [])), list(classes)
        missing = [c for c in theirs if c not in ours]
        extra = [c for c in ours if c not in theirs]
        detail = []
        if missing:
            detail.append(f"missing from the dataset: {', '.join(missing[:5])}")
        if extra:
            detail.append(f"not in the checkpoint: {', '.join(extra[:5])}")
        if not detail:
            detail.append("same classes in a different order")
        raise UserError(
            f"dataset classes differ from the {source}'s {len(theirs)} classes ({'; '.join(detail)})"
        )


def load_model_state(model: nn.Module, state: dict[str, Any], source: str = "checkpoint") -> None:
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper elsewhere
        state = {k[len("module."):]: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        reason = first[1].strip() if len(first) > 1 else first[0]
        raise UserError(f"{source} does not fit this model architecture ({reason[:200]})") from None


def model_from_checkpoint(
    path_or_ckpt: str | Path | dict[str, Any], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained classifier (eval mode) + {classes, class_names, data_cfg, config, ...}."""
    from imagenette_lab.models.factory import create_classifier

    if isinstance(path_or_ckpt, dict):
        ckpt, source = path_or_ckpt, "checkpoint"
    else:
        ckpt, source = load_checkpoint(path_or_ckpt), str(path_or_ckpt)
    arch = ckpt["arch"]
    # The weights come from the checkpoint: never download/load ImageNet weights here.
    model = create_classifier(
        arch["name"],
        arch["num_classes"],
        pretrained=False,
        freeze_base=False,
        head=arch["head"],
        dropout=arch["dropout"],
    )
    load_model_state(model, ckpt["model"], source)
    model.to(device).eval()
    info = {
        "classes": list(ckpt["classes"]),
        "class_names": list(ckpt["class_names"]),
        "data_cfg": dict(ckpt["data_cfg"]),
        "config": ckpt["config"],
        "arch": dict(arch),
        "epoch": ckpt.get("epoch"),
        "stage": ckpt.get("stage"),
        "best": ckpt.get("best"),
    }
    return model, info
