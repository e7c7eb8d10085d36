"""Test helpers: tiny generated image-folder datasets and paths to the optional real data in ../shared."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from imagenette_lab.data.synthetic import SYNTHETIC_CLASSES, make_synthetic_dataset, write_image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_224 = SHARED_DATA / "imagenette2-224"
REAL_FULLRES = SHARED_DATA / "imagenette-fullres"

TINY_CLASSES = SYNTHETIC_CLASSES


def make_dataset(
    root: Path,
    per_class: dict[str, int] | None = None,
    size: int = 32,
    seed: int = 0,
    bad_files: bool = True,
) -> Path:
    """Write `<root>/{train,val}/<wnid>/*` with real JPEG/PNG files.

    With `bad_files`, train also holds one grayscale JPEG, one CMYK JPEG, one PNG, one corrupt
    (truncated) JPEG, one zero-byte file and one text file.
    """
    per_class = per_class or {"train": 6, "val": 3}
    make_synthetic_dataset(root, per_class, size=size, seed=seed)
    rng = random.Random(seed + 1)
    if bad_files and "train" in per_class:
        d = root / "train" / TINY_CLASSES[0]
        write_image(d / "grey.JPEG", 0, rng, size, mode="L")
        write_image(d / "cmyk.JPEG", 0, rng, size, mode="CMYK")
        write_image(d / "img.png", 0, rng, size, fmt="PNG")
        # Big enough that a cut at 60 % keeps the header: it fails at decode time, not at indexing.
        write_image(d / "truncated.JPEG", 0, rng, 128)
        data = (d / "truncated.JPEG").read_bytes()
        (d / "truncated.JPEG").write_bytes(data[: len(data) * 6 // 10])
        (d / "empty.JPEG").write_bytes(b"")
        (d / "notes.txt").write_text("not an image")
    return root


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path
