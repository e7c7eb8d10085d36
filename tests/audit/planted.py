"""A generated dataset with planted audit answers: copies across splits, a flipped label, odd files.

Every image is a distinct random low-frequency pattern (so hashes and embeddings of different images
differ) tinted by its class colour (so the classes are linearly separable on raw pixels).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import TINY_CLASSES

TINTS = np.array([[255, 60, 60], [60, 255, 60], [60, 60, 255]], dtype=np.float32)
SIZE = 64


def pattern_image(label: int, rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    grid = rng.uniform(0, 1, (4, 4)).astype(np.float32)
    pattern = np.asarray(Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
                         dtype=np.float32) / 255
    rgb = 0.25 + 0.75 * pattern[..., None] * (TINTS[label] / 255)
    return Image.fromarray((rgb * 255).clip(0, 255).astype(np.uint8))


def make_planted(root: Path, train: int = 10, val: int = 4, seed: int = 0) -> dict[str, Path]:
    """Write the dataset; returns the planted files by role."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for label, cls in enumerate(TINY_CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pattern_image(label, rng).save(d / f"{split}_{i}.png")
    c0, c1, c2 = TINY_CLASSES
    p = {"exact_src": root / "train" / c0 / "train_0.png", "exact_copy": root / "val" / c0 / "copy_exact.png",
         "resized_src": root / "train" / c1 / "train_1.png", "resized_copy": root / "val" / c1 / "copy_small.jpg",
         "flipped": root / "train" / c0 / "flipped.png", "blank": root / "val" / c1 / "blank.png",
         "tiny": root / "train" / c2 / "tiny.png", "wide": root / "train" / c2 / "wide.png",
         "rotated": root / "train" / c2 / "rotated.jpg", "grey": root / "train" / c2 / "grey.png",
         "notes": root / "train" / c2 / "notes.txt", "truncated": root / "train" / c2 / "truncated.jpg"}
    shutil.copyfile(p["exact_src"], p["exact_copy"])
    Image.open(p["resized_src"]).resize((40, 40)).save(p["resized_copy"], quality=60)
    pattern_image(2, rng).save(p["flipped"])  # a class-2 picture filed under class 0
    Image.new("RGB", (SIZE, SIZE), (128, 128, 128)).save(p["blank"])
    pattern_image(2, rng, 12).save(p["tiny"])
    pattern_image(2, rng).resize((SIZE * 4, SIZE // 2)).save(p["wide"])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    pattern_image(2, rng).save(p["rotated"], exif=exif)
    pattern_image(2, rng).convert("L").save(p["grey"])
    p["notes"].write_text("not an image")
    buf = io.BytesIO()
    pattern_image(2, rng, 256).save(buf, "JPEG")
    p["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    return p
