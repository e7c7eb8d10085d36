"""`imagenette-lab cache`: decode a dataset once into uint8 tensor caches that `train` reads (data.cache)."""

from __future__ import annotations

import argparse

from imagenette_lab.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
        help="pre-decode a dataset into memory-mapped uint8 tensors (train with --set data.cache=true)",
        description="Decode every image of each split once: shorter side resized to SIZE, centre SIZE x SIZE "
        "kept, stored as uint8 in a memory-mapped file with a manifest (labels, file sizes/mtimes, undecodable "
        "files) in ROOT/.imagenette_lab/ (or ~/.cache/imagenette_lab/ when ROOT is read-only; "
        "IMAGENETTE_LAB_CACHE_DIR overrides). A valid cache is reused; a changed dataset is rebuilt. "
        "Caches of other sizes are kept side by side.",
    )
    p.add_argument("--root", required=True, metavar="DIR", help="dataset root (<root>/<split>/<class>/<image>)")
    p.add_argument("--size", type=int, default=None, metavar="S",
                   help="stored side in px (default: the one train uses, img-size / eval-crop-pct)")
    p.add_argument("--img-size", type=int, default=128, metavar="N",
                   help="size evaluated at (data.eval_size, else data.img_size); sets the default --size "
                        "(default: %(default)s)")
    p.add_argument("--eval-crop-pct", type=float, default=0.875, help="as data.eval_crop_pct (default: %(default)s)")
    p.add_argument("--splits", nargs="+", default=None, metavar="SPLIT", help="default: every split")
    p.add_argument("--interpolation", choices=("bilinear", "bicubic"), default="bilinear")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default: %(default)s)")
    p.add_argument("--rebuild", action="store_true", help="rebuild even when the cache is valid")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.size is not None and args.size < 8:
        raise UsageError(f"--size must be at least 8, got {args.size}")
    if args.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {args.workers}")
    if not 0 < args.eval_crop_pct <= 1:
        raise UsageError(f"--eval-crop-pct must be in (0, 1], got {args.eval_crop_pct}")
    from imagenette_lab.data.dataset import index_split, list_splits
    from imagenette_lab.data.tensor_cache import cache_size_for, load_or_build

    size = args.size or cache_size_for(args.img_size, args.eval_crop_pct)
    splits = args.splits or list_splits(args.root)
    classes = None
    for split in splits:
        index = index_split(args.root, split, classes=classes)
        classes = classes or index.classes  # later splits use the first split's label order
        cache = load_or_build(index, size, interpolation=args.interpolation, workers=args.workers,
                              rebuild=args.rebuild)
        m = cache.manifest
        unindexed = f"; {len(index.skipped)} more skipped when indexing, as logged" if index.skipped else ""
        print(f"{split}: {m['n'] - m['n_skipped']} images at {size}x{size} ({m['n_skipped']} undecodable, "
              f"listed in the manifest{unindexed}), {cache.nbytes_on_disk() / 2**20:.1f} MiB: {cache.data_path}")
    return 0
