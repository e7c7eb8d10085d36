"""What `reproduce` remembers about each stage: a hash of its resolved settings and inputs.

Each stage folder gets `stage.json` ({"hash", "inputs"}) when the stage starts. A rerun compares
the hash of the settings it would use now: equal and complete -> skipped; equal and interrupted ->
resumed; different (or no record) -> the old folder is moved aside, the stage reruns from scratch,
and the old folder is deleted once the new one is complete, so nothing stale is ever reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from imagenette_lab.utils import atomic_write_json

RECORD = "stage.json"
TRASH = ".replaced"  # under OUT: old stage folders waiting for their replacement to finish


def dataset_fingerprint(root: str | Path) -> str:
    """Hash of every file's path (relative to root) and size: changes when images are added,
    removed, renamed or rewritten with another size; cheap on 10k files (one stat each)."""
    root = Path(root)
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            p = Path(dirpath) / f
            try:
                size = p.stat().st_size
            except OSError:
                size = -1
            h.update(f"{p.relative_to(root).as_posix()}\0{size}\n".encode())
    return h.hexdigest()[:16]


def stage_hash(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_record(stage_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((stage_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "hash" in data else None


def write_record(stage_dir: Path, digest: str, inputs: dict[str, Any]) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stage_dir / RECORD, {"hash": digest, "inputs": inputs})


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def describe_changes(old: dict[str, Any] | None, new: dict[str, Any], limit: int = 4) -> str:
    """'train.epochs 5 -> 20, data.img_size 112 -> 128' (the first `limit` differences)."""
    if old is None:
        return "no record of the settings it was run with"
    a, b = _flatten(old.get("inputs", {})), _flatten(new)
    diffs = [f"{k} {a.get(k, '-')} -> {b.get(k, '-')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if not diffs:
        return "its settings changed"
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ", ".join(diffs[:limit]) + more


def move_aside(stage_dir: Path) -> Path | None:
    """Rename an old stage folder out of the way (atomic, same file system); None if absent."""
    if not stage_dir.exists():
        return None
    trash = stage_dir.parent / TRASH
    trash.mkdir(exist_ok=True)
    dest = trash / f"{stage_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    os.replace(stage_dir, dest)
    return dest


def discard(old: Path | None) -> None:
    """Delete a replaced folder (after its replacement completed) and an emptied trash folder."""
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        try:
            old.parent.rmdir()
        except OSError:
            pass
