"""`imagenette-lab download`: fetch, verify and safely extract an Imagenette archive."""

from __future__ import annotations

import argparse
import re

from imagenette_lab.errors import UsageError


# torchvision's Imagenette archive sizes, listed here so `--help` need not import torch;
# tests/data/test_download.py checks they match torchvision's table.
SIZES = ("full", "320px", "160px")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="download, verify (md5) and safely extract Imagenette",
        description="Download an Imagenette archive (resuming a partial download), verify its md5 "
        "and extract it into ROOT. Does nothing when the dataset folder is already there.",
    )
    p.add_argument("--size", choices=SIZES, default="160px",
                   help="image size variant (default: %(default)s)")
    p.add_argument("--root", default="data", help="folder to download into (default: %(default)s)")
    p.add_argument("--url", help="mirror URL to download from instead of the official one")
    p.add_argument("--md5", help="expected md5 of the archive (default: the official one for --size)")
    p.add_argument("--retries", type=_non_negative_int, default=4,
                   help="retries after a transient failure (default: %(default)s)")
    p.add_argument("--timeout", type=_positive_float, default=30.0,
                   help="seconds without data before a request fails (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.md5 is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", args.md5):
        raise UsageError(f"--md5 must be 32 hex digits, got {args.md5!r}")
    from imagenette_lab.data.download import download_imagenette

    folder = download_imagenette(
        args.root,
        args.size,
        url=args.url,
        md5=args.md5.lower() if args.md5 else None,
        retries=args.retries,
        timeout=args.timeout,
    )
    print(folder)
    return 0
