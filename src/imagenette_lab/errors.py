"""Errors the library raises. The CLI prints them as one line and exits non-zero, no traceback.

Catch `LabError` for everything this package raises on purpose; `UserError` for bad input only.
"""

from __future__ import annotations

from pathlib import Path


class LabError(Exception):
    """Base of every error imagenette-lab raises on purpose (not a bug)."""

    exit_code = 1
    label = "error"  # the CLI prints `imagenette-lab CMD: <label>: <message>`


class UserError(LabError):
    """A runtime problem with the user's input (paths, files, data): exit code 1."""

    exit_code = 1


class UsageError(UserError):
    """Invalid or conflicting command-line arguments: exit code 2, like argparse."""

    exit_code = 2


class TrainingInterrupted(LabError):
    """Training stopped by Ctrl-C or SIGTERM; `checkpoint` (if any) continues it with resume=run_dir."""

    label = "interrupted"

    def __init__(self, run_dir: str | Path, checkpoint: str | Path | None, epoch: int, signum: int = 2):
        self.run_dir = Path(run_dir)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.epoch = int(epoch)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum  # the shell convention for a signal
        saved = f"saved {self.checkpoint}" if self.checkpoint else "no new checkpoint (the last epoch's is kept)"
        super().__init__(f"after epoch {self.epoch}: {saved}; continue with --resume {self.run_dir}")
