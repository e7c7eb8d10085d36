"""One data-source factory (in the spirit of timm's `create_dataset`): every image read goes through here.

Sources:
  "folder"  decode the files with PIL on every access (`dataset.ImageFolder`)
  "cache"   read pre-decoded uint8 tensors from a memory-mapped cache (`tensor_cache`), built on
            first use; same transforms, same (image, label, index) items, None for undecodable files
Both take the same torchvision.transforms.v2 pipeline (it accepts PIL images and uint8 tensors).
"""

from __future__ import annotations

from typing import Any, Callable

from torch.utils.data import Dataset

from imagenette_lab.data.dataset import ImageFolder, SplitIndex
from imagenette_lab.errors import UserError

SOURCES = ("folder", "cache")


def make_dataset(index: SplitIndex, transform: Callable | None = None, source: str = "folder", *,
                 draft: int | None = None, size: int | None = None, interpolation: str = "bilinear",
                 seed: int = 0, workers: int = 2, **_: Any) -> Dataset:
    """A map-style dataset over `index` from `source`; `size` is the cache's stored side (source "cache")."""
    if source == "folder":
        return ImageFolder(index, transform, draft=draft)
    if source == "cache":
        from imagenette_lab.data.tensor_cache import CachedImages, load_or_build

        if not size:
            raise UserError("the cache source needs a size (data.cache_size or the eval size / eval_crop_pct)")
        cache = load_or_build(index, size, interpolation=interpolation, workers=workers)
        return CachedImages(cache, index, transform, seed=seed)
    raise UserError(f"unknown data source '{source}' (choose from {', '.join(SOURCES)})")


def source_from_config(data: Any, seed: int = 0, interpolation: str = "bilinear") -> dict[str, Any]:
    """make_dataset keyword arguments for a run's DataConfig (`data.cache`, `data.cache_size`)."""
    if not getattr(data, "cache", False):
        return {"source": "folder"}
    from imagenette_lab.data.tensor_cache import cache_size_for

    size = data.cache_size or cache_size_for(data.eval_px, data.eval_crop_pct)
    return {"source": "cache", "size": size, "interpolation": interpolation, "seed": seed,
            # decoding the cache is parallel even when training reads it in-process (workers=0)
            "workers": max(data.workers, 2)}


def prepare(indices: list[SplitIndex], source: str = "folder", **kw: Any) -> None:
    """Build what `source` needs up front (the tensor caches), so that under DDP rank 0 builds
    them once before the other ranks read them (call on rank 0, then barrier)."""
    if source != "cache":
        return
    from imagenette_lab.data.tensor_cache import load_or_build

    for index in indices:
        load_or_build(index, kw["size"], interpolation=kw.get("interpolation", "bilinear"),
                      workers=kw.get("workers", 2))
