"""A tiny generated image-folder dataset (real JPEG files) for the `smoke` profile and tests.

Each class has its own base colour plus noise, so even a small model can learn it in one epoch.
Folders are real Imagenette wnids, so zero-shot class mapping works on it too.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from imagenette_lab.data.classes import IMAGENETTE

SYNTHETIC_CLASSES = [IMAGENETTE[0].wnid, IMAGENETTE[1].wnid, IMAGENETTE[9].wnid]
_COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200)]


def write_image(path: Path, label: int, rng: random.Random, size: int, mode: str = "RGB",
                fmt: str = "JPEG") -> None:
    im = Image.new("RGB", (size, size), _COLOURS[label % len(_COLOURS)])
    px = im.load()
    for _ in range(size * 2):
        px[rng.randrange(size), rng.randrange(size)] = tuple(rng.randrange(256) for _ in range(3))
    (im.convert(mode) if mode != "RGB" else im).save(path, fmt)


def make_synthetic_dataset(
    root: str | Path,
    per_split: dict[str, int] | None = None,
    classes: list[str] | None = None,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """Write `<root>/<split>/<class>/<class>_<i>.JPEG`; returns root. Idempotent for the same args."""
    root = Path(root)
    per_split = per_split or {"train": 6, "val": 3}
    classes = classes or SYNTHETIC_CLASSES
    rng = random.Random(seed)
    for split, n in per_split.items():
        for label, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                write_image(d / f"{cls}_{i}.JPEG", label, rng, size)
    return root
