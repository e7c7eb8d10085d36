"""Plain progress lines for logs: tqdm hides its bar when stderr is not a terminal (a log file, CI,
nohup), which left a 9-minute epoch silent. Then every PROGRESS_SECONDS (or every `every_steps`
batches, when set) one INFO line says where the epoch is: step/total, img/s, running loss/accuracy.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("imagenette_lab.engine.loop")

PROGRESS_SECONDS = 30.0


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


class ProgressLines:
    """Call `update(step, n_images[, loss_sum, correct])` after each step (batch); it logs when due."""

    def __init__(self, desc: str, total: int, *, enabled: bool | None = None,
                 seconds: float | None = None, every_steps: int = 0, n_start: int = 0):
        self.desc, self.total = desc, total
        if enabled is None:
            from imagenette_lab.engine import distributed as dist

            enabled = dist.is_main() and not stderr_is_terminal()
        self.enabled = enabled
        self.seconds = PROGRESS_SECONDS if seconds is None else seconds
        self.every_steps = every_steps
        self.start = self.last = time.perf_counter()
        self.n_start = n_start  # images already counted when a resumed epoch starts part-way

    def update(self, step: int, n: int, loss_sum: float | None = None, correct: int | None = None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        due = (self.every_steps and step % self.every_steps == 0) or now - self.last >= self.seconds
        if not due or step >= self.total:  # the epoch's own summary line follows at the end
            return
        self.last = now
        rate = (n - self.n_start) / (now - self.start) if now > self.start else 0.0
        metrics = ""
        if loss_sum is not None and correct is not None and n:
            metrics = f", loss {loss_sum / n:.4f}, acc {correct / n:.4f}"
        log.info("%s: step %d/%d, %.1f img/s%s", self.desc, step, self.total, rate, metrics)


def epoch_line(row: dict, total: int, history: list[dict]) -> str:
    """The one line a finished epoch logs: train/val metrics, LR, time, img/s and the ETA (mean epoch time)."""
    mean = sum(r["seconds"] for r in history) / len(history)
    eta = mean * (total - row["epoch"])
    val = (f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} f1 {row['val_f1']:.4f}"
           if row["val_acc"] is not None else "val -")
    return (f"epoch {row['epoch']}/{total} [{row['stage']}] train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.4f} | {val} | lr {row['lr']:.2e} | {row['seconds']:.1f}s, "
            f"{row['images_per_s']} img/s | eta {int(eta // 60)}m{int(eta % 60):02d}s")
