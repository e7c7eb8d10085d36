"""Contact sheets to check audit findings by eye: image pairs side by side, and single suspects."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers/CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from imagenette_lab.data.dataset import BadImageError, load_rgb  # noqa: E402
from imagenette_lab.plots import _save  # noqa: E402 - the one atomic PNG writer

THUMB = 192


def _thumb(path: str) -> np.ndarray | None:
    try:
        im = load_rgb(path, draft=THUMB)
    except BadImageError:
        return None
    im.thumbnail((THUMB, THUMB))
    return np.asarray(im)


def _show(ax, path: str, caption: str, colour: str = "black") -> None:
    img = _thumb(path)
    if img is None:
        ax.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.imshow(img)
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_edgecolor(colour)
        s.set_linewidth(2)
    ax.set_title(caption, fontsize=7, color=colour)


def _empty(path: Path, title: str, message: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, wrap=True)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path, dpi=100)


def _name(path: str, width: int = 28) -> str:
    n = Path(path).name
    return n if len(n) <= width else "…" + n[-(width - 1):]


def pair_gallery(pairs: list[dict], path: Path, title: str, empty_message: str, per_row: int = 3) -> Path:
    """One panel per pair (image A | image B). Each dict: path_a, label_a, path_b, label_b, score
    (the caption line shared by the pair) and optionally flagged (red frame when True)."""
    if not pairs:
        return _empty(path, title, empty_message)
    cols = 2 * min(per_row, len(pairs))
    rows = -(-len(pairs) // per_row)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.45 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, p in enumerate(pairs):
        r, c = divmod(k, per_row)
        colour = "tab:red" if p.get("flagged") else "tab:gray"
        for side, ax in zip("ab", (axes[r, 2 * c], axes[r, 2 * c + 1])):
            ax.axis("on")
            _show(ax, p[f"path_{side}"], f"{p[f'label_{side}']}\n{_name(p[f'path_{side}'])}", colour)
        axes[r, 2 * c].set_xlabel(p["score"], fontsize=7, loc="left", color=colour)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def image_gallery(images: list[dict], path: Path, title: str, empty_message: str, per_row: int = 5) -> Path:
    """A grid of single images. Each dict: path, caption (a few short lines)."""
    if not images:
        return _empty(path, title, empty_message)
    cols = min(per_row, len(images))
    rows = -(-len(images) // per_row)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, item in enumerate(images):
        ax = axes.flat[k]
        ax.axis("on")
        caption = "\n".join(textwrap.shorten(line, 38) for line in item["caption"].splitlines())
        _show(ax, item["path"], caption, "tab:red")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path, dpi=100)
