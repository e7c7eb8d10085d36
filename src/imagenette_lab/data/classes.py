"""Class tables: Imagenette wnid -> readable name -> ImageNet-1k index, and the 1000 ImageNet labels.

The ImageNet-1k list ships in `imagenet_classes.txt` (index order, `wnid<TAB>label`), so no download
is needed at run time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from imagenette_lab.errors import UserError


@dataclass(frozen=True)
class ImagenetteClass:
    wnid: str
    name: str
    imagenet_index: int


IMAGENETTE: tuple[ImagenetteClass, ...] = (
    ImagenetteClass("n01440764", "tench", 0),
    ImagenetteClass("n02102040", "English springer", 217),
    ImagenetteClass("n02979186", "cassette player", 482),
    ImagenetteClass("n03000684", "chain saw", 491),
    ImagenetteClass("n03028079", "church", 497),
    ImagenetteClass("n03394916", "French horn", 566),
    ImagenetteClass("n03417042", "garbage truck", 569),
    ImagenetteClass("n03425413", "gas pump", 571),
    ImagenetteClass("n03445777", "golf ball", 574),
    ImagenetteClass("n03888257", "parachute", 701),
)
IMAGENETTE_BY_WNID = {c.wnid: c for c in IMAGENETTE}


@lru_cache(maxsize=1)
def _imagenet_table() -> tuple[tuple[str, ...], tuple[str, ...]]:
    text = resources.files("imagenette_lab.data").joinpath("imagenet_classes.txt").read_text()
    rows = [line.split("\t", 1) for line in text.splitlines() if line.strip()]
    assert len(rows) == 1000, "packaged imagenet_classes.txt must list 1000 classes"
    return tuple(r[0] for r in rows), tuple(r[1] for r in rows)


def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order."""
    return _imagenet_table()[0]


def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k human-readable labels in class-index order."""
    return _imagenet_table()[1]


def display_name(folder: str) -> str:
    """Readable name for a class folder: Imagenette/ImageNet wnids are translated, others kept."""
    if folder in IMAGENETTE_BY_WNID:
        return IMAGENETTE_BY_WNID[folder].name
    wnids = imagenet_wnids()
    if folder in wnids:
        return imagenet_labels()[wnids.index(folder)].split(",")[0]
    return folder


def load_class_map(path: str | Path) -> dict[str, int]:
    """Read a user's folder-name -> ImageNet index map (JSON object, or YAML mapping)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cannot read class map {path}: {e.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"class map {path} is not valid JSON/YAML: {e}") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, int) and 0 <= v < 1000 for v in data.values()
    ):
        raise UserError(f"class map {path} must map folder names to ImageNet indices 0-999")
    return {str(k): int(v) for k, v in data.items()}


def imagenet_indices(classes: list[str], class_map: dict[str, int] | None = None) -> list[int]:
    """ImageNet-1k index of each class folder (Imagenette wnid, any ImageNet wnid, or mapped).

    Raises UserError naming the folders that cannot be mapped.
    """
    wnids = {w: i for i, w in enumerate(imagenet_wnids())}
    out, missing = [], []
    for c in classes:
        if class_map and c in class_map:
            out.append(class_map[c])
        elif c in wnids:
            out.append(wnids[c])
        else:
            missing.append(c)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UserError(
            f"classes are not ImageNet classes: {shown}; pass --class-map FILE "
            "(JSON {folder: imagenet_index}) to map them"
        )
    return out
