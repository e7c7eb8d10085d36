"""`imagenette-lab` entry point: one subcommand per stage, each defined in `commands/<name>.py`.

A command module exposes `register(subparsers)`, which adds its parser and sets `func=run`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from imagenette_lab import __version__
from imagenette_lab.errors import LabError

COMMANDS = ["download", "analyze", "audit", "zero_shot", "cache", "train", "evaluate", "predict", "export",
            "report", "reproduce", "calibrate", "explain"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagenette-lab",
        description="Dataset analysis, zero-shot evaluation, training and reports for Imagenette "
        "and any image-folder dataset.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"imagenette_lab.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except LabError as e:  # user mistakes, interrupted training: one line, no traceback
        if args.debug:
            raise
        print(f"imagenette-lab {args.command}: {e.label}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"imagenette-lab {args.command}: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError, OSError) as e:
        # Out of memory and disk errors are the user's environment, not a bug: one line, no traceback.
        message = _environment_error(e)
        if args.debug or message is None:
            raise
        print(f"imagenette-lab {args.command}: error: {message}", file=sys.stderr)
        return 1


def _environment_error(e: BaseException) -> str | None:
    """A one-line message for out-of-memory and OS errors; None for anything else (a real bug)."""
    text = str(e).lower()
    oom = isinstance(e, MemoryError) or "out of memory" in text or "can't allocate memory" in text
    if oom:
        return "out of memory; try a smaller --batch-size (or data.batch_size)"
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}"
    return None
