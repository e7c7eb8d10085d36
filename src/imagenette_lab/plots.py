"""Figures shared by evaluation, training and the report: confusion heatmaps, learning curves, galleries.

Every function renders off-screen (Agg), writes the PNG atomically and closes its figure, so long
runs that save hundreds of plots neither leak memory nor need a display.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from imagenette_lab.data.dataset import BadImageError, load_rgb  # noqa: E402
from imagenette_lab.utils import atomic_write_bytes  # noqa: E402

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")
# Beyond this many classes the per-cell numbers are unreadable, so only colours are drawn.
MAX_ANNOTATED_CLASSES = 30
THUMB_PX = 256
GREY = 128


def _save(fig: Figure, out_png: str | Path, dpi: int = 110) -> Path:
    """Render to memory, then write atomically: a crash never leaves a half-written PNG."""
    out_png = Path(out_png)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_png, buf.getvalue())
    return out_png


def row_normalize(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (fraction of that true class); all-zero rows stay zero, not NaN."""
    cm = np.asarray(cm, dtype=float)
    sums = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)


def plot_confusion(
    cm: np.ndarray,
    row_names: Sequence[str],
    col_names: Sequence[str],
    out_png: str | Path,
    normalize: bool = False,
    title: str = "",
) -> Path:
    """Heatmap of a confusion matrix (rows = true, columns = predicted), cells annotated.

    With `normalize`, rows are divided by their sums and cells show fractions; otherwise counts.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape != (len(row_names), len(col_names)):
        raise ValueError(
            f"confusion matrix shape {cm.shape} does not match "
            f"{len(row_names)} row names x {len(col_names)} column names"
        )
    values = row_normalize(cm) if normalize else cm.astype(float)
    n_rows, n_cols = values.shape
    side = max(4.0, 0.55 * max(n_rows, n_cols) + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    vmax = 1.0 if normalize else max(float(values.max(initial=0.0)), 1.0)
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n_cols), labels=list(col_names), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n_rows), labels=list(row_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("Confusion matrix (row-normalised)" if normalize else "Confusion matrix"))
    if max(n_rows, n_cols) <= MAX_ANNOTATED_CLASSES:
        fontsize = 9 if max(n_rows, n_cols) <= 12 else 6
        for i in range(n_rows):
            for j in range(n_cols):
                v = values[i, j]
                text = f"{v:.2f}" if normalize else f"{int(round(v))}"
                # Light text on dark cells so every number stays legible.
                color = "white" if v > 0.5 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)
    return _save(fig, out_png)


def history_frame(history: pd.DataFrame | Iterable[Mapping]) -> pd.DataFrame:
    """Learning-curve table with numeric columns epoch, train/val loss/acc (missing ones -> NaN).

    Epochs default to 1..n when absent, so a plain list of per-epoch dicts plots as expected.
    """
    df = history.copy() if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))
    for col in HISTORY_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if df["epoch"].isna().all():
        df["epoch"] = np.arange(1, len(df) + 1, dtype=float)
    return df[list(HISTORY_COLUMNS)].reset_index(drop=True)


def plot_history(history: pd.DataFrame | Iterable[Mapping], out_png: str | Path, title: str = "") -> Path:
    """Accuracy (left) and loss (right) per epoch, train vs validation, like the study's Figures 6/7.

    NaN values (an epoch that did not measure something) are skipped and the line joins its
    neighbours; markers keep a lone measured epoch visible.
    """
    raw = history if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))
    df = history_frame(raw)
    for col in ("holdout_acc", "holdout_loss"):
        df[col] = pd.to_numeric(raw[col], errors="coerce").to_numpy(float) if col in raw else np.nan
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = (("acc", "Accuracy", axes[0]), ("loss", "Loss", axes[1]))
    for metric, label, ax in panels:
        drawn = False
        # holdout: the slice of train that picks the checkpoint (data.holdout_frac); absent in older runs.
        for split, style in (("train", "-o"), ("val", "--s"), ("holdout", ":^")):
            series = df[["epoch", f"{split}_{metric}"]].dropna()
            if series.empty:
                continue
            ax.plot(series["epoch"], series[f"{split}_{metric}"], style, markersize=3, label=split)
            drawn = True
        if drawn:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label.lower())
        ax.set_title(label)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out_png)


def _thumbnail(path: str | Path | None) -> tuple[np.ndarray, bool]:
    """(RGB array, ok). An unreadable or missing image becomes a grey tile: a gallery never fails a run."""
    if path is None or str(path) == "":
        return np.full((64, 64, 3), GREY, dtype=np.uint8), False
    try:
        img = load_rgb(path, draft=THUMB_PX)
    except BadImageError:
        return np.full((64, 64, 3), GREY, dtype=np.uint8), False
    img.thumbnail((THUMB_PX, THUMB_PX))
    return np.asarray(img), True


def plot_gallery(
    items: Sequence[tuple[str | Path | None, str]], out_png: str | Path, ncols: int = 4, title: str = ""
) -> Path:
    """Grid of thumbnails with captions; unreadable images are drawn as grey tiles marked so."""
    items = list(items)
    ncols = max(1, min(ncols, len(items) or 1))
    nrows = max(1, math.ceil(len(items) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not items:
        axes[0, 0].text(0.5, 0.5, "no images", ha="center", va="center", transform=axes[0, 0].transAxes)
    for ax, (path, caption) in zip(axes.flat, items):
        pixels, ok = _thumbnail(path)
        ax.imshow(pixels)
        text = caption if ok else f"{caption} [unreadable]"
        ax.set_title(textwrap.fill(str(text), width=34), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out_png)
