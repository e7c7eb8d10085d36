"""Test helpers: tiny generated image-folder datasets and paths to the optional real data in ../shared."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_224 = SHARED_DATA / "imagenette2-224"
REAL_FULLRES = SHARED_DATA / "imagenette-fullres"

# Three real Imagenette wnids so zero-shot class mapping works on generated data too.
TINY_CLASSES = ["n01440764", "n02102040", "n03888257"]


def _write_image(path: Path, rng: random.Random, size: int, mode: str = "RGB", fmt: str = "JPEG") -> None:
    # Class-dependent colour + noise: learnable by a tiny model, so training tests can check accuracy rises.
    label = TINY_CLASSES.index(path.parent.name) if path.parent.name in TINY_CLASSES else 0
    base = [(200, 40, 40), (40, 200, 40), (40, 40, 200)][label % 3]
    im = Image.new("RGB", (size, size), base)
    px = im.load()
    for _ in range(size * 2):
        x, y = rng.randrange(size), rng.randrange(size)
        px[x, y] = tuple(rng.randrange(256) for _ in range(3))
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path, fmt)


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
    rng = random.Random(seed)
    for split, n in per_class.items():
        for wnid in TINY_CLASSES:
            d = root / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _write_image(d / f"{wnid}_{i}.JPEG", rng, size)
    if bad_files and "train" in per_class:
        d = root / "train" / TINY_CLASSES[0]
        _write_image(d / "grey.JPEG", rng, size, mode="L")
        _write_image(d / "cmyk.JPEG", rng, size, mode="CMYK")
        _write_image(d / "img.png", rng, size, fmt="PNG")
        # Big enough that a cut at 60 % keeps the header: it fails at decode time, not at indexing.
        _write_image(d / "truncated.JPEG", rng, 128)
        data = (d / "truncated.JPEG").read_bytes()
        (d / "truncated.JPEG").write_bytes(data[: len(data) * 6 // 10])
        (d / "empty.JPEG").write_bytes(b"")
        (d / "notes.txt").write_text("not an image")
    return root


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path
