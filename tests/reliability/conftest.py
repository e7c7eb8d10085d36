"""Shared pieces of the reliability suite: a dataset full of hostile files, tiny training settings,
and a helper that runs the real CLI in a child process (signals, exit codes, stderr)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from imagenette_lab.data.classes import IMAGENETTE
from imagenette_lab.data.synthetic import make_synthetic_dataset, write_image
from tests.helpers import REPO, TINY_CLASSES

# timm's 370k-parameter ResNet at 32 px: a full epoch on a few dozen images takes well under a second.
TINY_TRAIN = ["model.name=test_resnet", "model.pretrained=false", "data.img_size=32", "data.batch_size=8",
              "data.workers=0", "data.augment=baseline", "train.amp=off"]
EMPTY_CLASS = IMAGENETTE[2].wnid  # a real wnid (so zero-shot can map it) whose folders stay empty
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# Files every split of the hostile dataset gets in its first class folder, by what must happen to them.
READABLE_ODD = {"png_named.JPEG", "grey.JPEG", "cmyk.JPEG", "rgba.png", "palette.png", "one_px.png",
                "wide.JPEG"}
SKIPPED_AT_INDEX = {"zero.JPEG", "random.JPEG", "notes.txt", ".DS_Store", "selfloop.JPEG"}
# Root reads a chmod-000 file anyway: that sub-case only exists for other users.
(READABLE_ODD if IS_ROOT else SKIPPED_AT_INDEX).add("noread.JPEG")
UNDECODABLE = {"truncated.JPEG"}  # the header is fine; decoding fails later


def sets(*pairs: str) -> list[str]:
    """["a=1", "b=2"] -> ["--set", "a=1", "--set", "b=2"]."""
    return [a for s in pairs for a in ("--set", s)]


def write_hostile_files(d: Path, rng: random.Random) -> None:
    """Every kind of odd or broken file a real image folder has been seen to hold."""
    (d / "zero.JPEG").write_bytes(b"")
    write_image(d / "truncated.JPEG", 0, rng, 128)
    data = (d / "truncated.JPEG").read_bytes()
    (d / "truncated.JPEG").write_bytes(data[: len(data) * 6 // 10])
    (d / "random.JPEG").write_bytes(bytes(rng.randrange(256) for _ in range(2048)))
    write_image(d / "png_named.JPEG", 0, rng, 24, fmt="PNG")
    write_image(d / "grey.JPEG", 0, rng, 24, mode="L")
    write_image(d / "cmyk.JPEG", 0, rng, 24, mode="CMYK")
    write_image(d / "rgba.png", 0, rng, 24, mode="RGBA", fmt="PNG")
    pal = Image.new("RGB", (24, 24), (200, 40, 40)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal.info["transparency"] = 0
    pal.save(d / "palette.png", transparency=0)
    Image.new("RGB", (1, 1), (200, 40, 40)).save(d / "one_px.png")
    Image.new("RGB", (10000, 50), (200, 40, 40)).save(d / "wide.JPEG", "JPEG")
    (d / "notes.txt").write_text("not an image")
    (d / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    os.symlink(".", d / "loop")  # a directory symlink to its own parent: a loop for naive walkers
    os.symlink("selfloop.JPEG", d / "selfloop.JPEG")  # a file symlink to itself (ELOOP on open)
    write_image(d / "noread.JPEG", 0, rng, 24)
    os.chmod(d / "noread.JPEG", 0)


def make_hostile_dataset(root: Path, per_split: dict[str, int] | None = None, size: int = 24) -> Path:
    """3 clean classes + one empty class folder per split, and the hostile files in class 0 of each split."""
    per_split = per_split or {"train": 5, "val": 2}
    make_synthetic_dataset(root, per_split, size=size)
    rng = random.Random(7)
    for split in per_split:
        (root / split / EMPTY_CLASS).mkdir()
        write_hostile_files(root / split / TINY_CLASSES[0], rng)
    return root


@pytest.fixture(scope="session")
def hostile_dataset(tmp_path_factory) -> Path:
    return make_hostile_dataset(tmp_path_factory.mktemp("hostile") / "data")


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """Clean 3-class data, 32 px: training on it takes a fraction of a second per epoch."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("small") / "data", {"train": 8, "val": 3}, size=32)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """On a shared 2-core machine, 2 OpenMP threads per process spin against each other (and against
    the child processes here): a tiny epoch then takes seconds instead of ~0.1 s. Restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1"}


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "imagenette_lab", *args]


def spawn(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    """Start the CLI in a child process (text pipes); the caller waits/communicates."""
    return subprocess.Popen(cli_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), cwd=cwd)


def error_lines(err: str) -> list[str]:
    """stderr without logging lines (INFO:/WARNING:/DEBUG:), i.e. what the CLI itself printed."""
    return [ln for ln in err.strip().splitlines() if not ln.startswith(("INFO:", "WARNING:", "DEBUG:"))]
