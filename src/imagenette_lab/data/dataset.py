"""Index image folders (`<root>/<split>/<class>/<image>`) and load images safely.

Unreadable files never crash a run: indexing opens each file's header (cheap) and lists what fails
in `SplitIndex.skipped`; a file that passes the header check but fails to decode later (a truncated
JPEG) makes `ImageFolder.__getitem__` return None, `collate_skip` drops it, and the caller learns
which indices never arrived.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from PIL import Image, UnidentifiedImageError

from imagenette_lab.errors import UserError

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class Sample(NamedTuple):
    path: Path
    label: int
    nbytes: int
    width: int
    height: int
    mode: str


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class SplitIndex:
    """The readable images of one split, in a stable order (class, then file name)."""

    root: Path
    split: str
    classes: list[str]
    samples: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [s.label for s in self.samples]

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for s in self.samples:
            counts[s.label] += 1
        return counts

    def subset(self, per_class: int | None, seed: int = 0) -> "SplitIndex":
        """At most `per_class` images of each class, drawn with `seed` (order kept)."""
        if not per_class:
            return self
        rng = random.Random(seed)
        keep: list[int] = []
        for c in range(len(self.classes)):
            idx = [i for i, s in enumerate(self.samples) if s.label == c]
            keep += idx if len(idx) <= per_class else rng.sample(idx, per_class)
        samples = [self.samples[i] for i in sorted(keep)]
        return SplitIndex(self.root, self.split, self.classes, samples, list(self.skipped))


class BadImageError(Exception):
    """The file is not a decodable image; the message is the reason."""


def check_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"dataset root {root} does not exist")
    if not root.is_dir():
        raise UserError(f"dataset root {root} is not a directory")
    return root


def list_splits(root: str | Path) -> list[str]:
    """Sub-folders of `root` that hold at least one class folder (e.g. ['train', 'val'])."""
    root = check_root(root)
    splits = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            if any(c.is_dir() and not c.name.startswith(".") for c in d.iterdir()):
                splits.append(d.name)
        except OSError:
            continue
    if not splits:
        raise UserError(
            f"{root} has no class folders (expected {root}/<split>/<class>/<image>, "
            "e.g. train/n01440764/x.JPEG)" + _split_folder_hint(root)
        )
    return splits


# Names people give their splits, by the role our configs call train/val.
SPLIT_ALIASES = {
    "val": ("val", "validation", "valid", "test", "testing", "eval", "dev"),
    "train": ("train", "training"),
}


def _split_folder_hint(root: Path) -> str:
    """When `root` is itself a split folder (its sub-folders hold images), say to pass the parent."""
    try:
        for d in root.iterdir():
            if d.is_dir() and any(f.suffix.lower() in IMG_EXTENSIONS for f in d.iterdir() if f.is_file()):
                return (f"; {root} looks like a split folder itself (its sub-folders hold images): "
                        f"the root is its parent, {root.parent}")
    except OSError:
        pass
    return ""


def missing_split_hint(root: Path, split: str) -> str:
    """'; <root> has 'validation': set data.val_split=validation ...' for a split folder not found."""
    try:
        present = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError:
        return ""
    role = next((r for r, names in SPLIT_ALIASES.items() if split.lower() in names), None)
    alias = next((d for d in present if role and d.lower() in SPLIT_ALIASES[role] and d != split), None)
    if alias:
        return (f"; {root} has '{alias}': use it with --set data.{role}_split={alias} (train) "
                f"or --split {alias} (zero-shot)")
    if present:
        return f"; {root} holds {', '.join(present[:8])}" + _split_folder_hint(root)
    return ""


def find_classes(split_dir: Path) -> list[str]:
    try:
        return sorted(
            p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
    except OSError as e:
        raise UserError(f"cannot list {split_dir}: {e.strerror}") from None


def probe(path: Path) -> tuple[int, int, int, str]:
    """(bytes, width, height, mode) from the file header; raises BadImageError."""
    try:
        nbytes = path.stat().st_size
    except OSError as e:
        raise BadImageError(f"unreadable: {e.strerror}") from None
    if nbytes == 0:
        raise BadImageError("empty file")
    try:
        with Image.open(path) as im:
            return nbytes, im.width, im.height, im.mode
    except UnidentifiedImageError:
        raise BadImageError("not an image") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"unreadable: {e}") from None


def index_split(
    root: str | Path, split: str, classes: list[str] | None = None
) -> SplitIndex:
    """Index `<root>/<split>/<class>/**/<image>`.

    `classes` fixes the label order (pass the train classes when indexing val); a folder not in
    it is an error, a class with no images is kept (count 0) with a warning.
    """
    root = check_root(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise UserError(f"split '{split}' not found: {split_dir} is not a directory"
                        + missing_split_hint(root, split))
    found = find_classes(split_dir)
    if classes is None:
        classes = found
        if not classes:
            raise UserError(f"{split_dir} has no class folders")
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise UserError(
                f"{split_dir} has classes not in the model/training set: {', '.join(extra[:5])}"
            )
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    # Probes persist across runs (keyed by path + size + mtime): a second run opens no headers.
    from imagenette_lab.data.index_store import ProbeStore

    store = ProbeStore.for_split(root, split)
    for label, cls in enumerate(classes):
        cdir = split_dir / cls
        files: list[Path] = []
        # followlinks=False: a symlink loop cannot recurse forever.
        for dirpath, dirnames, filenames in os.walk(cdir, followlinks=False, onerror=None):
            dirnames.sort()
            files += [Path(dirpath) / f for f in sorted(filenames)]
        n_before = len(samples)
        for p in files:
            if p.name.startswith("."):
                skipped.append(Skipped(str(p), "hidden file"))
            elif p.suffix.lower() not in IMG_EXTENSIONS:
                skipped.append(Skipped(str(p), "not an image file extension"))
            else:
                try:
                    samples.append(Sample(p, label, *store.probe(p, probe, BadImageError)))
                except BadImageError as e:
                    skipped.append(Skipped(str(p), str(e)))
        if len(samples) == n_before:
            log.warning("class '%s' in %s has no readable images", cls, split_dir)
    store.save()
    for s in skipped:
        log.warning("skipping %s (%s)", s.path, s.reason)
    if not samples:
        raise UserError(f"{split_dir} contains no readable images")
    return SplitIndex(split_dir, split, list(classes), samples, skipped)


def load_rgb(path: str | Path, draft: int | None = None) -> Image.Image:
    """Decode an image as RGB (grey, CMYK, palette, alpha converted); raises BadImageError.

    `draft` lets JPEG decode at a reduced scale when the target size is small: much faster on
    full-resolution photos and lossless for the final resize.
    """
    try:
        with Image.open(path) as im:
            if draft and im.format == "JPEG":
                im.draft("RGB", (draft, draft))
            im.load()
            if im.mode in ("P", "PA", "LA"):
                im = im.convert("RGBA")
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImageError(str(e) or type(e).__name__) from None


class ImageFolder(torch.utils.data.Dataset):
    """Map-style dataset over a SplitIndex; items are (image, label, index), or None if undecodable."""

    def __init__(self, index: SplitIndex, transform: Callable | None = None, draft: int | None = None):
        self.index = index
        self.transform = transform
        self.draft = draft

    def __len__(self) -> int:
        return len(self.index.samples)

    def __getitem__(self, i: int):
        s = self.index.samples[i]
        try:
            img = load_rgb(s.path, self.draft)
        except BadImageError as e:
            log.warning("skipping %s (%s)", s.path, e)
            return None
        return (self.transform(img) if self.transform else img), s.label, i


def collate_skip(batch):
    """default_collate without the None items of undecodable images; None if nothing is left."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.utils.data.default_collate(batch)
