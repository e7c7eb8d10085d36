"""Pre-decoded uint8 image cache: decode every JPEG once, then train from a memory-mapped array.

Policy ("short-crop"): the image's shorter side is resized to S with the model's interpolation
(antialiased, PIL, exactly as `eval_transform`'s first step) and the centre S x S is kept. With
S = floor(img_size / eval_crop_pct) (146 for 128 px) the eval transform on a cached image gives
the same pixels as on the file; training draws its random-resized crops from the S x S image.

Files in the dataset's cache folder (see index_store.cache_dir), one pair per (split, S, policy),
so caches of other sizes live side by side:
  tensors-<split>-<S>px-<policy>.json          manifest (written last: its presence commits the cache)
  tensors-<split>-<S>px-<policy>-<id>.u8.npy   (N, S, S, 3) uint8, rows in index order
The manifest keys every row by the file's path (relative to the split folder) + size + mtime, and
lists undecodable files with their reason. A dataset change (new, changed or removed files that
the run needs) is reported and the cache rebuilt, reusing the rows of unchanged files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from imagenette_lab.data.dataset import BadImageError, SplitIndex, load_rgb
from imagenette_lab.data.index_store import cache_dir
from imagenette_lab.data.seeding import sample_seed  # the same per-sample seeds as the folder source
from imagenette_lab.errors import UserError
from imagenette_lab.utils import atomic_write_json, fmt_bytes

log = logging.getLogger(__name__)

VERSION = 1
POLICY = "short-crop"


def cache_size_for(img_size: int, eval_crop_pct: float = 0.875) -> int:
    """The stored side for a train/eval size: the eval resize, so eval from the cache is exact."""
    return int(img_size / float(eval_crop_pct))


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _names(split: str, size: int, policy: str) -> str:
    return f"tensors-{split}-{size}px-{policy}"


class _Decode(Dataset):
    """Decoded + resized + centre-cropped HWC uint8 arrays, or the reason the file failed."""

    def __init__(self, paths: list[Path], size: int, interpolation: str):
        self.paths, self.size, self.interpolation = paths, size, interpolation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from torchvision.transforms import v2

        from imagenette_lab.data.transforms import _interp

        try:
            img = load_rgb(self.paths[i], draft=self.size)
            img = v2.functional.resize(img, self.size, interpolation=_interp(self.interpolation), antialias=True)
            img = v2.functional.center_crop(img, [self.size, self.size])
            return i, np.asarray(img, dtype=np.uint8), None
        except BadImageError as e:
            return i, None, str(e)


def _as_list(batch):
    return batch


class TensorCache:
    """A committed cache: the manifest plus a lazily opened read-only memmap (safe across fork)."""

    def __init__(self, manifest_path: Path, manifest: dict[str, Any]):
        self.manifest_path, self.manifest = manifest_path, manifest
        self.data_path = manifest_path.parent / manifest["data_file"]
        self.size = int(manifest["size"])
        self._arr: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._arr is None:
            self._arr = np.load(self.data_path, mmap_mode="r")
        return self._arr

    def __getstate__(self) -> dict[str, Any]:  # workers reopen the memmap instead of copying it
        return {**self.__dict__, "_arr": None}

    def nbytes_on_disk(self) -> int:
        return self.data_path.stat().st_size

    def lookup(self, index: SplitIndex) -> tuple[list[int], dict[int, str], list[str]]:
        """(row per index item, -1 if undecodable; reasons of undecodable items; items not covered)."""
        rows, bad, missing = [], {}, []
        entries, skipped = self.manifest["rows"], self.manifest["skipped"]
        for i, s in enumerate(index.samples):
            key = os.path.relpath(s.path, index.root)
            try:
                stamp = _stamp(Path(s.path))
            except OSError:
                stamp = None
            e = entries.get(key)
            if e is not None and e[1:] == stamp:
                rows.append(e[0])
                continue
            k = skipped.get(key)
            if k is not None and k[1:] == stamp:
                rows.append(-1)
                bad[i] = k[0]
                continue
            rows.append(-1)
            missing.append(key)
        return rows, bad, missing


def _load_manifest(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
        if m.get("version") != VERSION or not (path.parent / m["data_file"]).is_file():
            return None
        return m
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable tensor cache manifest %s", path)
        return None


def _fallocate(fd: int, nbytes: int) -> None:
    """Reserve the whole file up front: a full disk fails here, before any decoding."""
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
            return  # the filesystem cannot preallocate: writes report ENOSPC instead
        raise


def build(index: SplitIndex, size: int, *, interpolation: str = "bilinear", folder: Path,
          old: TensorCache | None = None, workers: int = 2,
          progress: Callable[[int, int], None] | None = None) -> TensorCache:
    """Decode `index` into a new cache (rows of `old` for unchanged files are copied, not decoded)."""
    policy = f"{POLICY}-{interpolation}"
    base = _names(index.split, size, policy)
    manifest_path = folder / f"{base}.json"
    data_name = f"{base}-{uuid.uuid4().hex[:8]}.u8.npy"
    tmp = folder / f".{data_name}.tmp"
    n = len(index.samples)
    shape = (n, size, size, 3)
    reuse = {}
    if old is not None:
        old_rows, _, _ = old.lookup(index)
        reuse = {i: r for i, r in enumerate(old_rows) if r >= 0}
    todo = [i for i in range(n) if i not in reuse]
    rows: dict[str, list[int]] = {}
    skipped: dict[str, list] = {}
    t0 = time.perf_counter()
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            offset = f.tell()
            _fallocate(f.fileno(), offset + int(np.prod(shape)))
            row_bytes = size * size * 3
            loader = DataLoader(_Decode([Path(index.samples[i].path) for i in todo], size, interpolation),
                                # small builds (tests, subsets) decode in-process: no worker start-up
                                batch_size=32, num_workers=workers if len(todo) >= 512 else 0,
                                collate_fn=_as_list,
                                # its own RNG: the loader's base seed drawn from the global one would make
                                # a run that builds the cache train differently from one that reuses it
                                generator=torch.Generator())
            done = 0
            for batch in loader:
                for j, arr, reason in batch:
                    i = todo[j]
                    s = index.samples[i]
                    key = os.path.relpath(s.path, index.root)
                    if arr is None:
                        log.warning("tensor cache: skipping %s (%s)", s.path, reason)
                        skipped[key] = [reason, *_stamp(Path(s.path))]
                        continue
                    f.seek(offset + i * row_bytes)
                    f.write(arr.tobytes())
                    rows[key] = [i, *_stamp(Path(s.path))]
                done += len(batch)
                if progress:
                    progress(done, len(todo))
            for i, r in reuse.items():
                s = index.samples[i]
                f.seek(offset + i * row_bytes)
                f.write(np.ascontiguousarray(old.array[r]).tobytes())  # type: ignore[union-attr]
                rows[os.path.relpath(s.path, index.root)] = [i, *_stamp(Path(s.path))]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / data_name)
        manifest = {
            "version": VERSION, "split": index.split, "split_dir": str(index.root), "size": size,
            "policy": policy, "description": f"shorter side resized to {size} ({interpolation}, antialiased), "
            f"centre {size}x{size} kept; uint8 HWC", "classes": index.classes, "data_file": data_name,
            "shape": list(shape), "n": n, "n_skipped": len(skipped), "n_reused": len(reuse),
            "fingerprint": hashlib.sha1(json.dumps([rows, skipped], sort_keys=True).encode()).hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.perf_counter() - t0, 2),
            "labels": [s.label for s in index.samples], "rows": rows, "skipped": skipped,
        }
        atomic_write_json(manifest_path, manifest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        (folder / data_name).unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise UserError(f"disk full while writing the tensor cache in {folder} (needs "
                            f"{fmt_bytes(int(np.prod(shape)))}); "
                            "nothing was kept - free space or set IMAGENETTE_LAB_CACHE_DIR") from None
        raise UserError(f"cannot write the tensor cache in {folder}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if old is not None and old.data_path.name != data_name:
        old.data_path.unlink(missing_ok=True)
    # Leftovers of an interrupted build (a temp file is never a valid cache).
    for stray in folder.glob(f".{base}-*.u8.npy.tmp"):
        if stray != tmp:
            stray.unlink(missing_ok=True)
    return TensorCache(manifest_path, manifest)


def load_or_build(index: SplitIndex, size: int, *, interpolation: str = "bilinear",
                  folder: Path | None = None, workers: int = 2, rebuild: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> TensorCache:
    """The cache covering every item of `index` at `size`: reused when valid, else (re)built."""
    if size < 8:
        raise UserError(f"cache size must be at least 8 px, got {size}")
    folder = folder or cache_dir(index.root.parent)
    policy = f"{POLICY}-{interpolation}"
    path = folder / f"{_names(index.split, size, policy)}.json"
    m = _load_manifest(path)
    old = TensorCache(path, m) if m is not None else None
    if old is not None and not rebuild:
        _, _, missing = old.lookup(index)
        if not missing:
            log.info("using the tensor cache %s (%d images, %dx%d)", old.data_path, old.manifest["n"], size, size)
            return old
        log.warning("the dataset changed since the tensor cache %s was built (%d files new, changed or "
                    "outside the cached subset, e.g. %s): rebuilding it", path, len(missing), missing[0])
    else:
        log.info("building the tensor cache for %s at %d px (%d images) in %s",
                 index.root, size, len(index), folder)
    cache = build(index, size, interpolation=interpolation, folder=folder, old=old, workers=workers,
                  progress=progress)
    log.info("tensor cache %s: %d images, %.1f MiB, %d skipped, %.1fs", cache.data_path, cache.manifest["n"],
             cache.nbytes_on_disk() / 2**20, cache.manifest["n_skipped"], cache.manifest["build_seconds"])
    return cache


class CropFlip:
    """The crop + flip + normalise of `train_transform(augment="baseline")`, batched on uint8 tensors.

    Per sample: RandomResizedCrop's box (torchvision's algorithm) drawn from a `random.Random` seeded
    by (seed, epoch, index) -- cheaper than reseeding torch's global RNG, and it leaves that RNG alone
    -- then `v2.functional.resized_crop` on the channels-last uint8 image. Per batch: flips and the
    float conversion + normalisation in one vectorised pass.
    """

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float], interpolation: Any,
                 mean: Any, std: Any, flip: bool = True):
        self.size, self.scale, self.ratio, self.interpolation, self.flip = size, scale, ratio, interpolation, flip
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255

    @classmethod
    def from_transform(cls, transform: Any) -> "CropFlip | None":
        """The equivalent CropFlip of a v2 pipeline [RandomResizedCrop, RandomHorizontalFlip, ToImage,
        ToDtype(float32, scale), Normalize]; None for anything else (it then runs per sample)."""
        from torchvision.transforms import v2

        ops = list(getattr(transform, "transforms", []))
        kinds = [v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.ToImage, v2.ToDtype, v2.Normalize]
        if len(ops) != len(kinds) or not all(type(o) is k for o, k in zip(ops, kinds)):
            return None
        rrc, flip, _, dtype, norm = ops
        if flip.p != 0.5 or not getattr(dtype, "scale", False) or tuple(rrc.size) != (rrc.size[0],) * 2:
            return None
        return cls(rrc.size[0], tuple(rrc.scale), tuple(rrc.ratio), rrc.interpolation, norm.mean, norm.std)

    def box(self, rng: random.Random, height: int, width: int) -> tuple[int, int, int, int]:
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return rng.randint(0, height - h), rng.randint(0, width - w), h, w
        ratio = width / height  # fallback: the whole image, cropped to the ratio bounds
        if ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif ratio > max(self.ratio):
            h, w = height, int(round(height * max(self.ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, images: list[torch.Tensor], seeds: list[int]) -> torch.Tensor:
        from torchvision.transforms import v2

        out, flips = [], []
        for x, seed in zip(images, seeds):
            rng = random.Random(seed)
            top, left, h, w = self.box(rng, x.shape[-2], x.shape[-1])
            out.append(v2.functional.resized_crop(x, top, left, h, w, [self.size, self.size],
                                                  interpolation=self.interpolation, antialias=True))
            flips.append(self.flip and rng.random() < 0.5)
        batch = torch.stack(out)
        f = torch.tensor(flips)
        if f.any():
            batch[f] = batch[f].flip(-1)
        return batch.float().sub_(self.mean).div_(self.std)


class CachedImages(Dataset):
    """(transform(uint8 CHW tensor), label, index) items from a TensorCache; None if undecodable.

    `transform` is the same torchvision.transforms.v2 pipeline the folder source uses (v2 works on
    uint8 tensors). Randomness is seeded per (seed, epoch, index); call `set_epoch` every epoch.
    """

    def __init__(self, cache: TensorCache, index: SplitIndex, transform: Callable | None = None, seed: int = 0):
        self.cache, self.index, self.transform, self.seed = cache, index, transform, seed
        self.rows, self.bad, missing = cache.lookup(index)
        if missing:
            raise UserError(f"the tensor cache {cache.manifest_path} does not cover {missing[0]} "
                            f"({len(missing)} files); rebuild it with `imagenette-lab cache`")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def _image(self, i: int) -> torch.Tensor | None:
        """CHW uint8 view of a channels-last copy (the memmap is read-only; a row is ~64 KB)."""
        row = self.rows[i]
        if row < 0:
            log.warning("skipping %s (%s)", self.index.samples[i].path, self.bad.get(i, "undecodable"))
            return None
        return torch.from_numpy(np.array(self.cache.array[row])).permute(2, 0, 1)

    def __getitems__(self, indices: list[int]) -> list:
        """A whole batch at once (DataLoader calls this when present): the crop + flip fast path."""
        fast = CropFlip.from_transform(self.transform)
        if fast is None:
            return [self[i] for i in indices]
        images = {i: self._image(i) for i in indices}
        ok = [i for i in indices if images[i] is not None]
        if not ok:
            return [None] * len(indices)
        batch = fast([images[i] for i in ok], [sample_seed(self.seed, self.epoch, i) for i in ok])
        items = {i: (x, self.index.samples[i].label, i) for i, x in zip(ok, batch)}
        return [items.get(i) for i in indices]

    def __getitem__(self, i: int):
        x = self._image(i)
        if x is None:
            return None
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, self.epoch, i))
                x = self.transform(x)
        return x, self.index.samples[i].label, i
