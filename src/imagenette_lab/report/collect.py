"""Find run directories and read what each holds into plain objects the templates render.

Nothing here trusts a run directory to be complete: every file is optional, an unreadable or
malformed one becomes a note in `Run.problems`, an absent expected one an entry in `Run.missing`.
A directory is a *stage* (analysis, zero-shot, train, or a bare evaluation bundle) when its
`run.json` names the kind or its files give it away; otherwise its sub-directories are searched,
one level down, so a `reproduce` output folder can be passed as a whole.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from PIL import Image

from imagenette_lab.errors import UserError
from imagenette_lab.report.study import (
    STUDY_CLASS_COUNTS,
    STUDY_PER_CLASS,
    STUDY_RESULTS,
    class_wnid,
)

log = logging.getLogger(__name__)

KINDS = ("analysis", "zero_shot", "train")
MAX_IMAGE_BYTES = 25 * 1024 * 1024
MAX_TABLE_ROWS = 60
RECOMPRESS_BYTES = 600 * 1024  # PNGs above this are embedded as JPEG when that saves >= 30 %
IMAGE_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}

ANALYSIS_MARKERS = (
    "class_counts.csv", "class_counts.md", "class_counts.png", "class_percentages.png",
    "filesize_stats.csv", "filesize_box.png", "image_stats.csv",
)
TRAIN_MARKERS = ("history.csv", "curves.png", "checkpoints", "eval", "config.yaml")
ZERO_SHOT_MARKERS = ("restricted", "imagenet1000")
EVAL_MARKERS = ("metrics.json", "classification_report.csv")

ANALYSIS_EXPECTED = (
    "class_counts.csv", "class_counts.png", "class_percentages.png",
    "filesize_stats.csv", "filesize_box.png", "summary.json",
)
VARIANT_EXPECTED = (
    "metrics.json", "classification_report.csv", "confusion_matrix.png",
    "confusion_matrix_normalized.png", "top_losses.png", "most_confused.csv",
)
TRAIN_EXPECTED = (
    "config.yaml", "history.csv", "curves.png", "checkpoints/best.pt", "checkpoints/last.pt",
)
ZERO_SHOT_VARIANTS = {
    "restricted": "10-way: argmax over the dataset's classes only",
    "imagenet1000": "1000-way: argmax over all ImageNet classes (an answer outside the dataset's classes is an error)",
}
IMAGE_TITLES = {
    "class_counts.png": "Images per class",
    "class_percentages.png": "Share of each split per class",
    "filesize_box.png": "File size per class",
    "confusion_matrix.png": "Confusion matrix (counts)",
    "confusion_matrix_normalized.png": "Confusion matrix (row-normalised)",
    "top_losses.png": "Top losses (true / predicted)",
    "curves.png": "Learning curves",
}
HEADLINE = (
    ("accuracy", "Accuracy"),
    ("top5_accuracy", "Top-5 accuracy"),
    ("macro_precision", "Macro precision"),
    ("macro_recall", "Macro recall"),
    ("macro_f1", "Macro F1"),
    ("weighted_precision", "Weighted precision"),
    ("weighted_recall", "Weighted recall"),
    ("weighted_f1", "Weighted F1"),
    ("mean_loss", "Mean loss"),
    ("other_predictions", "Predictions outside the classes"),
    ("n", "Images evaluated"),
)


# ----------------------------------------------------------------------------- value objects


@dataclass
class Picture:
    title: str
    file: str
    src: str  # data: URI
    width: int
    height: int


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    caption: str = ""
    left_out: int = 0  # rows not shown


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


@dataclass
class Skipped:
    path: str
    reason: str


# ----------------------------------------------------------------------------- formatting


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


def fmt_bytes(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


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


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"


def frame_table(df: pd.DataFrame, caption: str = "", max_rows: int = MAX_TABLE_ROWS,
                index: bool = False) -> Table:
    if index:
        df = df.reset_index()
    left_out = max(0, len(df) - max_rows)
    shown = df.head(max_rows)
    numeric = [pd.api.types.is_numeric_dtype(shown[c]) and not pd.api.types.is_bool_dtype(shown[c])
               for c in shown.columns]
    formats = [_column_format(shown[c]) for c in shown.columns]
    rows = [[f(_py(v)) for f, v in zip(formats, rec)] for rec in shown.itertuples(index=False, name=None)]
    return Table([str(c) for c in shown.columns], rows, numeric, caption, left_out)


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
        if not isinstance(v, (int, float)) or isinstance(v, bool):
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


def kv_table(pairs: list[tuple[str, Any]], caption: str = "") -> Table:
    return Table(["key", "value"], [[k, fmt_number(v) if not isinstance(v, str) else v] for k, v in pairs],
                 [False, False], caption)


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


# ----------------------------------------------------------------------------- file readers


def _rel(run: Run, path: Path) -> str:
    try:
        return str(path.relative_to(run.path))
    except ValueError:
        return str(path)


def read_json(run: Run, path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        run.problems.append(f"{_rel(run, path)}: unreadable JSON ({str(e).splitlines()[0][:120]})")
        return None


def read_csv(run: Run, path: Path, **kw: Any) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:
        run.problems.append(f"{_rel(run, path)}: unreadable CSV ({str(e).splitlines()[0][:120]})")
        return None


def embed_image(run: Run, path: Path, title: str | None = None) -> Picture | None:
    """A verified image as a data URI; a corrupt or oversized file becomes a problem note."""
    if not path.is_file():
        return None
    rel = _rel(run, path)
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
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return Picture(title or IMAGE_TITLES.get(path.name, path.stem.replace("_", " ")), rel, uri, w, h)


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


def _pictures(run: Run, folder: Path, ordered: tuple[str, ...]) -> list[Picture]:
    """The named images first (in order), then any other PNG/JPEG in `folder`."""
    names = list(ordered)
    if folder.is_dir():
        names += sorted(p.name for p in folder.iterdir()
                        if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.name not in names
                        and not p.name.startswith("."))
    pics = [embed_image(run, folder / n) for n in names]
    return [p for p in pics if p is not None]


def _note_missing(run: Run, folder: Path, names: tuple[str, ...], prefix: str = "") -> None:
    for n in names:
        if not (folder / n).exists():
            run.missing.append(f"{prefix}{n}")


# ----------------------------------------------------------------------------- discovery


def _has(d: Path, names: tuple[str, ...]) -> bool:
    return any((d / n).exists() for n in names)


def _run_json_kind(d: Path) -> str | None:
    try:
        meta = json.loads((d / "run.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    kind = meta.get("kind") if isinstance(meta, dict) else None
    return kind if isinstance(kind, str) else None


def stage_kind(d: Path) -> str | None:
    """The stage a directory holds, from run.json or its files; None when nothing is recognisable."""
    kind = _run_json_kind(d)
    if kind in KINDS:
        return kind
    if _has(d, ZERO_SHOT_MARKERS) and any((d / v).is_dir() for v in ZERO_SHOT_MARKERS):
        return "zero_shot"
    metrics = None
    if (d / "metrics.json").is_file():
        try:
            metrics = json.loads((d / "metrics.json").read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            metrics = None
    if isinstance(metrics, dict) and any(k in metrics for k in ZERO_SHOT_MARKERS):
        return "zero_shot"
    if _has(d, ANALYSIS_MARKERS):
        return "analysis"
    if _has(d, TRAIN_MARKERS):
        return "train"
    if _has(d, EVAL_MARKERS):
        return "evaluation"
    if kind is not None or (d / "run.json").is_file():
        return "other"
    return None


def _children(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def discover(paths: list[str | Path]) -> tuple[list[tuple[Path, str, str]], list[Skipped], dict | None]:
    """Expand the user's paths into stage directories.

    Returns ([(dir, label, kind)], missing, container_meta). A path that does not exist is a
    UserError; one with no recognisable content is reported as missing, not fatal.
    """
    found: list[tuple[Path, str, str]] = []
    missing: list[Skipped] = []
    container_meta: dict | None = None
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise UserError(f"run directory {p} does not exist")
        if p.is_file() and p.name == "run.json":
            p = p.parent
        if not p.is_dir():
            raise UserError(f"{p} is not a directory (pass run directories or a folder holding them)")
        kind = stage_kind(p)
        if kind is not None and kind != "other":
            if p.resolve() not in seen:
                seen.add(p.resolve())
                found.append((p, p.resolve().name, kind))
            continue
        subs = [(c, stage_kind(c)) for c in _children(p)]
        stages = [(c, k) for c, k in subs if k is not None]
        if stages:
            if kind == "other":
                try:
                    container_meta = json.loads((p / "run.json").read_text())
                except (OSError, ValueError, UnicodeDecodeError):
                    container_meta = None
            for c, k in stages:
                if c.resolve() not in seen:
                    seen.add(c.resolve())
                    found.append((c, f"{p.resolve().name}/{c.name}", k))
            continue
        if kind == "other":  # a run.json of some other kind and nothing below it: show what is there
            if p.resolve() not in seen:
                seen.add(p.resolve())
                found.append((p, p.resolve().name, kind))
            continue
        missing.append(Skipped(str(p), "no run files (run.json, metrics, analysis tables...) here or one level down"))
    return found, missing, container_meta


# ----------------------------------------------------------------------------- loaders


def _headline(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, label in HEADLINE:
        v = metrics.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            count = key in ("n", "other_predictions")
            out.append((label, fmt_number(int(v)) if count else f"{float(v):.4f}"))
    return out


def _report_table(run: Run, df: pd.DataFrame, experiment: str | None) -> Table:
    df = df.copy()
    first = df.columns[0]
    if first.startswith("Unnamed") or first in ("class", ""):
        df = df.rename(columns={first: "class"})
    study = STUDY_PER_CLASS.get(experiment or "")
    if study and "class" in df.columns:
        wnids = [class_wnid(str(c)) for c in df["class"]]
        if any(w in study for w in wnids):
            df["study F1"] = [study[w][2] if w in study else float("nan") for w in wnids]
            if "f1-score" in df.columns:
                df["Δ F1"] = pd.to_numeric(df["f1-score"], errors="coerce") - df["study F1"]
    cap = "Per-class precision, recall, F1 (sklearn classification report)"
    if "study F1" in df.columns:
        cap += "; study F1 from its per-class figure"
    return frame_table(df, cap, max_rows=1100)


def load_variant(run: Run, folder: Path, key: str, title: str, fallback: dict | None = None,
                 expected: tuple[str, ...] = VARIANT_EXPECTED, prefix: str = "") -> Variant:
    v = Variant(key, title)
    m = read_json(run, folder / "metrics.json")
    if not isinstance(m, dict):
        m = fallback if isinstance(fallback, dict) else {}
    v.metrics = m
    v.headline = _headline(m)
    df = read_csv(run, folder / "classification_report.csv")
    if df is not None and len(df.columns):
        v.report = _report_table(run, df, run.experiment)
    elif isinstance(m.get("per_class"), dict) and m["per_class"]:
        rows = [{"class": k, **(val if isinstance(val, dict) else {})} for k, val in m["per_class"].items()]
        v.report = _report_table(run, pd.DataFrame(rows), run.experiment)
    mc = read_csv(run, folder / "most_confused.csv")
    if mc is not None and len(mc):
        v.confused = frame_table(mc, "Most confused pairs (true -> predicted)", max_rows=15)
    v.pictures = _pictures(run, folder, ("confusion_matrix.png", "confusion_matrix_normalized.png",
                                         "top_losses.png"))
    if folder.is_dir():
        _note_missing(run, folder, expected, prefix)
    else:
        run.missing.append(f"{prefix.rstrip('/') or folder.name}/ (whole folder)")
    return v


def _load_meta(run: Run) -> None:
    meta = read_json(run, run.path / "run.json")
    if meta is None:
        if not (run.path / "run.json").exists():
            run.missing.append("run.json (stage did not finish?)")
        return
    if not isinstance(meta, dict):
        run.problems.append("run.json: not a JSON object")
        return
    run.meta = meta
    status = meta.get("status")
    if status != "complete":
        run.problems.append(f"run.json status is {status!r}, not 'complete'")
    rows: list[tuple[str, str]] = []
    for k in ("name", "kind", "status", "started", "finished"):
        if meta.get(k) is not None:
            rows.append((k, str(meta[k])))
    if meta.get("wall_time_s") is not None:
        rows.append(("wall time", fmt_seconds(meta["wall_time_s"])))
    for section in ("versions", "hardware"):
        if isinstance(meta.get(section), dict):
            rows += [(f"{section}.{k}", fmt_number(v) if not isinstance(v, str) else v)
                     for k, v in flatten(meta[section])]
    run.meta_rows = rows
    shown = {"name", "kind", "status", "started", "finished", "wall_time_s", "versions", "hardware"}
    extra = {k: v for k, v in meta.items() if k not in shown}
    if extra:
        run.extra_json = json.dumps(extra, indent=2, default=str)


def _load_analysis(run: Run) -> None:
    d = run.path
    df = read_csv(run, d / "class_counts.csv")
    if df is not None and len(df.columns):
        if "wnid" in df.columns:
            wnids = [str(w) for w in df["wnid"]]
            if any(w in STUDY_CLASS_COUNTS for w in wnids):
                totals = tuple(map(sum, zip(*STUDY_CLASS_COUNTS.values())))
                study = [STUDY_CLASS_COUNTS.get(w, totals if w.lower() == "total" else None) for w in wnids]
                df = df.copy()
                df["study train"] = pd.array([s[0] if s else None for s in study], dtype="Int64")
                df["study val"] = pd.array([s[1] if s else None for s in study], dtype="Int64")
        run.tables.append(frame_table(df, "Images per class (count and % of split); study = its Table 1",
                                      max_rows=1000))
    df = read_csv(run, d / "filesize_stats.csv")
    if df is not None and len(df.columns):
        if df.columns[0].startswith("Unnamed"):
            df = df.rename(columns={df.columns[0]: "class"})
        run.tables.append(frame_table(df, "File size per class (bytes)", max_rows=1000))
    df = read_csv(run, d / "image_stats.csv")
    if df is not None and len(df.columns):
        if df.columns[0].startswith("Unnamed"):
            df = df.rename(columns={df.columns[0]: "class"})
        run.tables.append(frame_table(df, "Image statistics"))
    df = read_csv(run, d / "unreadable.csv")
    if df is not None:
        cap = f"Unreadable files skipped by the analysis: {len(df):,}"
        if len(df):
            run.tables.append(frame_table(df, cap, max_rows=30))
        else:
            run.info.append(("unreadable files", "0"))
    summary = read_json(run, d / "summary.json")
    if isinstance(summary, dict) and summary:
        # Per-class maps (counts...) repeat the tables above: summarised, not listed.
        run.tables.append(kv_table(flatten(summary, max_items=8), "Summary (summary.json)"))
    run.pictures = _pictures(run, d, ("class_counts.png", "class_percentages.png", "filesize_box.png"))
    _note_missing(run, d, ANALYSIS_EXPECTED)


def _load_zero_shot(run: Run) -> None:
    d = run.path
    top = read_json(run, d / "metrics.json")
    top = top if isinstance(top, dict) else {}
    for key, label in (("model", "model"), ("weights", "weights")):
        if top.get(key) is not None:
            run.info.append((label, str(top[key])))
    if isinstance(top.get("images_per_s"), (int, float)):
        run.info.append(("throughput", f"{top['images_per_s']:.1f} images/s"))
    run.model = str(top.get("model") or (run.meta or {}).get("model") or "") or None
    keys = [k for k in ZERO_SHOT_VARIANTS if (d / k).is_dir() or isinstance(top.get(k), dict)]
    keys += [c.name for c in _children(d) if c.name not in keys and _has(c, EVAL_MARKERS)]
    if not keys:
        keys = list(ZERO_SHOT_VARIANTS)
    for k in keys:
        run.variants.append(load_variant(run, d / k, k, ZERO_SHOT_VARIANTS.get(k, k),
                                         fallback=top.get(k), prefix=f"{k}/"))
    _note_missing(run, d, ("metrics.json",))
    run.missing[:] = list(dict.fromkeys(run.missing))


def _read_config(run: Run) -> None:
    path = run.path / "config.yaml"
    if not path.is_file():
        return
    try:
        run.config_text = path.read_text()
        cfg = yaml.safe_load(run.config_text)
    except (OSError, UnicodeDecodeError) as e:
        run.problems.append(f"config.yaml: unreadable ({e})")
        return
    except yaml.YAMLError as e:
        run.problems.append(f"config.yaml: invalid YAML ({str(e).splitlines()[0]})")
        return
    if isinstance(cfg, dict):
        run.config = cfg
    else:
        run.problems.append("config.yaml: not a YAML mapping")


def _load_train(run: Run) -> None:
    d = run.path
    meta = run.meta or {}
    model_cfg = (run.config or {}).get("model") if isinstance((run.config or {}).get("model"), dict) else {}
    run.model = str(meta.get("model") or model_cfg.get("name") or "") or None
    if run.model:
        run.info.append(("model", run.model))
    if "pretrained" in model_cfg:
        w = model_cfg.get("weights_file") or model_cfg.get("weights") or "default"
        run.info.append(("init", f"ImageNet-pretrained ({w})" if model_cfg["pretrained"] else "random (from scratch)"))
    if "freeze_base" in model_cfg:
        run.info.append(("base", "frozen" if model_cfg["freeze_base"] else "trainable"))
    for key, label in (("epochs_run", "epochs run"), ("best_epoch", "best epoch")):
        if meta.get(key) is not None:
            run.info.append((label, fmt_number(meta[key])))
    if isinstance(meta.get("probe"), dict):
        for k, v in flatten(meta["probe"]):
            run.info.append((f"probe {k}", fmt_number(v) if not isinstance(v, str) else v))
    hist = read_csv(run, d / "history.csv")
    curves = embed_image(run, d / "curves.png")
    if curves is None and hist is not None and len(hist):
        curves = _draw_curves(run, hist)
    if curves is not None:
        run.pictures.append(curves)
    if hist is not None and len(hist.columns):
        run.tables.append(frame_table(hist, "Per-epoch history", max_rows=200))
    fallback = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else None
    run.variants.append(load_variant(run, d / "eval", "eval", "Validation evaluation (eval/)",
                                     fallback=fallback, prefix="eval/"))
    ckpts = d / "checkpoints"
    if ckpts.is_dir():
        for p in sorted(ckpts.glob("*.pt")):
            try:
                run.info.append((f"checkpoint {p.name}", fmt_bytes(p.stat().st_size)))
            except OSError:
                pass
    _note_missing(run, d, TRAIN_EXPECTED)


def _draw_curves(run: Run, hist: pd.DataFrame) -> Picture | None:
    """Learning curves re-drawn from history.csv when curves.png is absent."""
    cols = [c for c in ("train_loss", "val_loss", "train_acc", "val_acc", "val_f1") if c in hist.columns]
    if "epoch" not in hist.columns or not cols:
        return None
    try:
        import matplotlib

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
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return Picture("Learning curves (drawn from history.csv)", "history.csv", uri, w, h)


def _load_generic(run: Run) -> None:
    d = run.path
    if _has(d, EVAL_MARKERS):
        run.variants.append(load_variant(run, d, "evaluation", "Evaluation"))
    else:
        run.pictures = _pictures(run, d, ())


def train_experiment(run: Run) -> str | None:
    """exp3 if the model started from ImageNet weights, exp2 if from scratch; else guessed by name."""
    model = (run.config or {}).get("model")
    if isinstance(model, dict) and isinstance(model.get("pretrained"), bool):
        return "exp3" if model["pretrained"] else "exp2"
    meta = run.meta or {}
    cfg = meta.get("config")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict) and isinstance(cfg["model"].get("pretrained"), bool):
        return "exp3" if cfg["model"]["pretrained"] else "exp2"
    names = f"{run.path.name} {meta.get('name', '')}".lower()
    if re.search(r"exp[_\-\s]?2|scratch", names):
        return "exp2"
    if re.search(r"exp[_\-\s]?3|transfer|fine[_\-\s]?tun", names):
        return "exp3"
    return None


def load_run(path: Path, label: str, kind: str) -> Run:
    run = Run(path=path, label=label, kind=kind)
    _load_meta(run)
    if kind == "zero_shot":
        run.experiment = "exp1"
        _load_zero_shot(run)
    elif kind == "train":
        # The config decides the experiment, and the experiment picks the study's per-class column.
        _read_config(run)
        run.experiment = train_experiment(run)
        _load_train(run)
    elif kind == "analysis":
        _load_analysis(run)
    else:
        _load_generic(run)
    return run


def comparison_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (experiment, our run/variant); an experiment with no run still gets a row."""
    rows: list[dict[str, Any]] = []
    metric_keys = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
    for exp, study in STUDY_RESULTS.items():
        mine = [r for r in runs if r.experiment == exp]
        entries: list[tuple[Run | None, str, dict]] = []
        for r in mine:
            if exp == "exp1":
                for v in r.variants:
                    entries.append((r, v.key, v.metrics))
            else:
                entries.append((r, "", r.primary_metrics()))
        if not entries:
            entries.append((None, "", {}))
        for r, variant, m in entries:
            ours = {k: (float(m[k]) if isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)
                        else None) for k in metric_keys}
            rows.append({
                "experiment": exp,
                "title": study["short"],
                "run": r.label if r else None,
                "anchor": r.anchor if r else None,
                "model": r.model if r else None,
                "variant": variant,
                "ours": ours,
                "study": {k: study[k] for k in metric_keys},
                "delta": {k: (ours[k] - study[k]) if ours[k] is not None else None for k in metric_keys},
            })
    for r in runs:
        if r.experiment is None and r.kind not in ("analysis",):
            m = r.primary_metrics()
            ours = {k: (float(m[k]) if isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)
                        else None) for k in metric_keys}
            if any(v is not None for v in ours.values()):
                rows.append({"experiment": None, "title": "not mapped to a study experiment",
                             "run": r.label, "anchor": r.anchor, "model": r.model, "variant": "",
                             "ours": ours, "study": {k: None for k in metric_keys},
                             "delta": {k: None for k in metric_keys}})
    return rows
