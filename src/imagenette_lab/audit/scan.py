"""One pass over the files: content hash, perceptual hashes, pixel statistics and EXIF orientation.

Every image is decoded once here (through `data.dataset.load_rgb`, so what fails to decode is the
same set the rest of the project skips). Results are cached per file (path, size, mtime) in
`<out>/cache/scan.csv`, so a rerun only touches new or changed files.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from imagenette_lab.data.dataset import BadImageError, load_rgb
from imagenette_lab.errors import UserError
from imagenette_lab.utils import atomic_write_text

log = logging.getLogger(__name__)

# Bump when a stored column changes meaning: old caches are then ignored.
SCAN_VERSION = 3
HASH_SIZE = 8  # 64-bit pHash/dHash: the imagehash default, fits one uint64
# JPEGs decode at a reduced scale of at least this size: enough for 32 px hashes and pixel stats,
# several times faster on full-resolution photos.
DRAFT = 256
COLUMNS = ["path", "nbytes", "mtime_ns", "sha1", "phash", "dhash", "std", "chroma",
           "exif_orientation", "error"]


def require_imagehash():
    try:
        import imagehash
    except ImportError:
        raise UserError("the audit needs imagehash: pip install 'imagenette-lab[audit]'") from None
    return imagehash


def _hash64(h) -> int:
    """An imagehash.ImageHash (8x8 bits) as a signed int64 (uint64 bit pattern), for numpy XOR."""
    return int.from_bytes(np.packbits(h.hash.reshape(-1)).tobytes(), "big", signed=True)


def exif_orientation(path: str | Path) -> int:
    """EXIF orientation tag (1 = upright; 0 when absent or unreadable)."""
    try:
        with Image.open(path) as im:
            return int(im.getexif().get(0x0112, 0) or 0)
    except Exception:  # header problems are reported by the decode below
        return 0


def scan_file(path: str) -> dict[str, Any]:
    """The scan record of one file; decode failures go to `error` (never raised)."""
    imagehash = require_imagehash()
    rec: dict[str, Any] = {"path": path, "sha1": "", "phash": 0, "dhash": 0, "std": np.nan,
                           "chroma": np.nan, "exif_orientation": 0, "error": ""}
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        rec["error"] = f"unreadable: {e.strerror}"
        return rec
    rec["sha1"] = hashlib.sha1(data).hexdigest()
    rec["exif_orientation"] = exif_orientation(path)
    try:
        img = load_rgb(path, draft=DRAFT)
    except BadImageError as e:
        rec["error"] = f"decode failed: {e}"
        return rec
    # One cheap box-filtered 64 px thumbnail feeds both hashes and the statistics: imagehash would
    # otherwise Lanczos-resize the full image twice (most of the scan time on 224 px photos).
    thumb = img.resize((64, 64), Image.Resampling.BOX)
    rec["phash"] = _hash64(imagehash.phash(thumb, hash_size=HASH_SIZE))
    rec["dhash"] = _hash64(imagehash.dhash(thumb, hash_size=HASH_SIZE))
    px = np.asarray(thumb, dtype=np.float32)
    # Luma std: a near-blank (single-colour) image has almost none. Chroma: the 99th percentile of
    # the per-pixel spread between the RGB channels: small for greyscale photos stored as RGB
    # (JPEG colour noise) but large when any part has colour (a mean would call a silver product
    # with one red LED on white greyscale).
    rec["std"] = float((px @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).std())
    rec["chroma"] = float(np.percentile(px.max(axis=2) - px.min(axis=2), 99))
    return rec


class _Files:
    """A map-style dataset of paths, so a torch DataLoader can spread the decoding over workers."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return scan_file(self.paths[i])


def _as_list(batch):
    return batch


def _stat_keys(paths: list[str]) -> tuple[list[int], list[int]]:
    sizes, mtimes = [], []
    for p in paths:
        try:
            st = Path(p).stat()
            sizes.append(st.st_size)
            mtimes.append(st.st_mtime_ns)
        except OSError:
            sizes.append(-1)
            mtimes.append(-1)
    return sizes, mtimes


def _load_cache(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""],
                         dtype={"sha1": str, "phash": np.int64, "dhash": np.int64, "error": str})
    except Exception as e:  # a damaged cache is only a lost shortcut
        log.warning("ignoring unreadable scan cache %s (%s)", path, type(e).__name__)
        return None
    if list(df.columns) != COLUMNS + ["version"] or (len(df) and int(df["version"].iloc[0]) != SCAN_VERSION):
        return None
    return df.drop(columns="version")


def scan(paths: list[str], cache: Path | None, workers: int = 0) -> pd.DataFrame:
    """Scan records for `paths` (same order), reusing cached rows whose size and mtime still match."""
    import torch

    sizes, mtimes = _stat_keys(paths)
    cached = _load_cache(cache) if cache else None
    known: dict[tuple[str, int, int], dict[str, Any]] = {}
    if cached is not None:
        cached["error"] = cached["error"].fillna("")
        for rec in cached.to_dict("records"):
            known[(rec["path"], int(rec["nbytes"]), int(rec["mtime_ns"]))] = rec
    todo = [i for i, k in enumerate(zip(paths, sizes, mtimes)) if k not in known]
    log.info("scan: %d file(s) to decode, %d reused from the cache", len(todo), len(paths) - len(todo))
    fresh: dict[int, dict[str, Any]] = {}
    if todo:
        loader = torch.utils.data.DataLoader(_Files([paths[i] for i in todo]), batch_size=64,
                                             num_workers=workers, collate_fn=_as_list)
        recs = [r for batch in loader for r in batch]
        fresh = dict(zip(todo, recs))
    rows = []
    for i, key in enumerate(zip(paths, sizes, mtimes)):
        rec = dict(fresh[i]) if i in fresh else dict(known[key])
        rec["nbytes"], rec["mtime_ns"] = key[1], key[2]
        rows.append(rec)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["error"] = df["error"].fillna("").astype(str)
    if cache and todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, df.assign(version=SCAN_VERSION).to_csv(index=False))
    return df
