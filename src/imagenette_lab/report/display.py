"""The plain objects the templates render, and the tolerant readers that fill them.

A run directory is never trusted: each reader here returns None for an absent file and turns an
unreadable one into a note in `Run.problems`, so one bad file costs one figure, not the report.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

MAX_TABLE_ROWS = 60
MAX_IMAGE_BYTES = 25 * 1024 * 1024
RECOMPRESS_BYTES = 600 * 1024  # PNGs above this are embedded as JPEG when that saves >= 30 %
IMAGE_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
IMAGE_TITLES = {
    "class_counts.png": "Images per class",
    "class_percentages.png": "Share of each split per class",
    "filesize_box.png": "File size per class",
    "confusion_matrix.png": "Confusion matrix (counts)",
    "confusion_matrix_normalized.png": "Confusion matrix (row-normalised)",
    "top_losses.png": "Mistakes with the highest loss",
    "curves.png": "Learning curves",
    "reliability.png": "Reliability diagram",
    "gradcam_grid.png": "Grad-CAM: where the model looks (fixed sample per class)",
    "top_losses_cam.png": "Mistakes with the highest loss, with Grad-CAM",
    "gallery_cross_split.png": "Closest train / val pairs",
    "gallery_label_issues.png": "Likely label errors",
}
# Figures that are rows of photos: shown one per line, full width, so their captions stay legible.
WIDE_IMAGES = ("class_counts.png", "class_percentages.png", "top_losses.png", "top_losses_cam.png", "gradcam_grid.png", "gallery_cross_split.png",
               "gallery_label_issues.png", "curves.png")


# ----------------------------------------------------------------------------- value objects


@dataclass
class Picture:
    title: str
    file: str
    src: str  # data: URI
    width: int
    height: int
    wide: bool = False  # a gallery: full width, one per line


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    caption: str = ""
    left_out: int = 0  # rows not shown
    collapsed: bool = False  # long reference tables: shown folded


@dataclass
class Variant:
    """One evaluation bundle (metrics, per-class report, confusion matrices, gallery)."""

    key: str
    title: str
    metrics: dict[str, Any] = field(default_factory=dict)
    headline: list[tuple[str, str]] = field(default_factory=list)
    report: Table | None = None
    confused: Table | None = None
    pictures: list[Picture] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one-line facts under the headline (calibration...)
    extra_tables: list[Table] = field(default_factory=list)


@dataclass
class Run:
    path: Path
    label: str
    kind: str | None = None  # analysis | zero_shot | train | evaluation | other
    meta: dict[str, Any] | None = None
    experiment: str | None = None
    anchor: str = ""
    model: str | None = None
    config_text: str | None = None
    config: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    info: list[tuple[str, str]] = field(default_factory=list)  # key facts (model, weights, epochs...)
    meta_rows: list[tuple[str, str]] = field(default_factory=list)  # run.json metadata
    extra_json: str | None = None  # run.json fields not shown elsewhere
    record: Any = None  # runrecord.RunRecord when run.json is readable
    title: str = ""
    settings: list[str] = field(default_factory=list)  # the settings line under every result
    summary: list[str] = field(default_factory=list)  # "What this shows"
    comparable: bool = False  # Imagenette with a study role: set beside the study's numbers
    seed_members: list[str] = field(default_factory=list)  # seeds: the sibling runs it summarises

    @property
    def complete(self) -> bool:
        return bool(self.meta) and self.meta.get("status") == "complete"

    def primary_metrics(self) -> dict[str, Any]:
        """Metrics of the main evaluation (train: eval/, else the first variant), or run.json's."""
        for v in self.variants:
            if v.metrics:
                return v.metrics
        m = (self.meta or {}).get("metrics")
        return m if isinstance(m, dict) else {}

    def rel(self, path: Path) -> str:
        """`path` as problem notes name it: relative to the run directory when inside it."""
        try:
            return str(path.relative_to(self.path))
        except ValueError:
            return str(path)


@dataclass
class Skipped:
    path: str
    reason: str


# ----------------------------------------------------------------------------- formatting


def is_number(v: Any) -> bool:
    """int or float, not bool (JSON true would otherwise count as 1)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt_number(v: Any, digits: int = 4) -> str:
    """Compact display: ints with separators, fractions with `digits` decimals, NaN/None as ''."""
    if v is None or v is pd.NA or v is pd.NaT:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return ""
        if v.is_integer() and abs(v) >= 1:
            return f"{int(v):,}"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.{digits}f}"
    return str(v)


def fmt_seconds(s: Any) -> str:
    try:
        s = float(s)
    except (TypeError, ValueError):
        return ""
    if math.isnan(s):
        return ""
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def frame_table(df: pd.DataFrame, caption: str = "", max_rows: int = MAX_TABLE_ROWS) -> Table:
    from imagenette_lab.report.describe import header

    left_out = max(0, len(df) - max_rows)
    shown = df.head(max_rows)
    numeric = [pd.api.types.is_numeric_dtype(shown[c]) and not pd.api.types.is_bool_dtype(shown[c])
               for c in shown.columns]
    formats = [_column_format(shown[c]) for c in shown.columns]
    rows = [[f(_py(v)) for f, v in zip(formats, rec)] for rec in shown.itertuples(index=False, name=None)]
    return Table([header(str(c)) for c in shown.columns], rows, numeric, caption, left_out)


def _column_format(col: pd.Series):
    """One number format per column, so 1.0 next to 0.9375 reads 1.0000, and 10.0 next to 9.06 10.00."""
    if not pd.api.types.is_float_dtype(col):
        return fmt_number
    vals = pd.to_numeric(col, errors="coerce").dropna()
    vals = vals[vals.abs() != float("inf")]
    if vals.empty:
        return fmt_number
    if (vals.abs() <= 1).all():
        fmt = "{:.4f}"
    elif (vals % 1 == 0).all() or vals.abs().max() >= 1000:
        fmt = "{:,.0f}"
    else:
        fmt = "{:.2f}"

    def f(v: Any) -> str:
        if not is_number(v):
            return fmt_number(v)
        if math.isnan(v) or math.isinf(v):
            return ""
        return fmt.format(v)

    return f


def _py(v: Any) -> Any:
    """numpy scalars -> Python scalars (so fmt_number sees int/float)."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return v.item()
        except (ValueError, AttributeError):
            return v
    return v


def flatten(d: Any, prefix: str = "", max_items: int = 0) -> list[tuple[str, Any]]:
    """Nested dict -> [("a.b", value)]; with `max_items`, a bigger nested mapping is summarised."""
    out: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        if max_items and prefix and len(d) > max_items:
            return [(prefix.rstrip("."), f"({len(d)} entries)")]
        for k, v in d.items():
            out += flatten(v, f"{prefix}{k}.", max_items)
        return out
    if isinstance(d, list):
        text = json.dumps(d, default=str)
        return [(prefix.rstrip("."), text if len(text) <= 200 else text[:197] + "...")]
    return [(prefix.rstrip("."), d)]


# ----------------------------------------------------------------------------- tolerant readers


def read_json(run: Run, path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        run.problems.append(f"{run.rel(path)}: unreadable JSON ({str(e).splitlines()[0][:120]})")
        return None


def read_csv(run: Run, path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:
        run.problems.append(f"{run.rel(path)}: unreadable CSV ({str(e).splitlines()[0][:120]})")
        return None


def embed_image(run: Run, path: Path) -> Picture | None:
    """A verified image as a data URI; a corrupt or oversized file becomes a problem note."""
    if not path.is_file():
        return None
    rel = run.rel(path)
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            run.problems.append(f"{rel}: image too large to embed ({size:,} bytes)")
            return None
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format, im.size
            im.load()  # verify() skips pixel data; a truncated PNG fails only here
    except Exception as e:  # noqa: BLE001 - any decode failure: note it, keep going
        run.problems.append(f"{rel}: unreadable image ({str(e)[:120] or type(e).__name__})")
        return None
    mime = IMAGE_MIME.get(fmt or "")
    if mime is None:
        run.problems.append(f"{rel}: image format {fmt} cannot be embedded")
        return None
    if fmt == "PNG" and len(data) > RECOMPRESS_BYTES:
        smaller = _as_jpeg(data)
        if smaller is not None and len(smaller) < 0.7 * len(data):
            data, mime = smaller, "image/jpeg"
    title = IMAGE_TITLES.get(path.name, path.stem.replace("_", " "))
    return Picture(title, rel, _data_uri(mime, data), w, h, wide=path.name in WIDE_IMAGES)


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _as_jpeg(png: bytes) -> bytes | None:
    """A big PNG of photos (top-loss galleries) as JPEG: a fraction of the bytes, same look."""
    try:
        with Image.open(io.BytesIO(png)) as im:
            im = im.convert("RGBA")
            flat = Image.new("RGB", im.size, (255, 255, 255))
            flat.paste(im, mask=im.getchannel("A"))
        buf = io.BytesIO()
        flat.save(buf, "JPEG", quality=88, optimize=True)
        return buf.getvalue()
    except Exception:  # noqa: BLE001 - keep the PNG
        return None


def folder_pictures(run: Run, folder: Path, ordered: tuple[str, ...]) -> list[Picture]:
    """The named images first (in order), then any other PNG/JPEG in `folder`."""
    names = list(ordered)
    if folder.is_dir():
        names += sorted(p.name for p in folder.iterdir()
                        if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.name not in names
                        and not p.name.startswith("."))
    pics = [embed_image(run, folder / n) for n in names]
    return [p for p in pics if p is not None]


def draw_curves(run: Run, hist: pd.DataFrame) -> Picture | None:
    """Learning curves re-drawn from history.csv, for a run that has no curves.png."""
    cols = [c for c in ("train_loss", "val_loss", "train_acc", "val_acc", "val_f1") if c in hist.columns]
    if "epoch" not in hist.columns or not cols:
        return None
    try:
        import matplotlib  # imported here: only runs without curves.png pay for it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for c in cols:
            ax = axes[0] if c.endswith("loss") else axes[1]
            ax.plot(hist["epoch"], pd.to_numeric(hist[c], errors="coerce"), marker="o", ms=3, label=c)
        for ax, t in zip(axes, ("loss", "accuracy / F1")):
            ax.set_xlabel("epoch")
            ax.set_title(t)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
    except Exception as e:  # noqa: BLE001 - a plot failure must not stop the report
        run.problems.append(f"could not draw curves from history.csv ({e})")
        return None
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    return Picture("Learning curves (drawn from history.csv)", "history.csv", _data_uri("image/png", data), w, h)
