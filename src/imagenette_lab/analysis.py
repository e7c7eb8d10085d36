"""Dataset analysis (the study's section II): class counts and percentages per split, file-size
descriptive statistics per class, image sizes/modes, and the list of unreadable files.

Outputs written into `out` by `analyze_dataset`:
  class_counts.csv/.md       one row per class (union over splits; 0 where a split lacks it) with
                             `<split>_count` and `<split>_pct`, plus a final TOTAL row  (Table 1)
  class_counts.png           grouped bars per class, one bar per split                 (Figure 1)
  class_percentages.png      the same as percentages of each split                     (Figure 2)
  filesize_stats.csv/.md     file size in bytes per (split, class): pandas describe() columns
                             count mean std min 25% 50% 75% max, plus an ALL row per split.
                             The study's Figure 3 is the rows with split == "train".   (Figure 3)
  filesize_box.png           box plot of file sizes per class (log scale), one panel per split
  image_stats.csv            per (split, class): width/height min/mean/max and a count per mode
  unreadable.csv             split, path, reason for every file left out (always written)
  summary.json               per-split totals/counts, min/max percentage (over the classes
                             present in that split), unreadable count, the files written
  run.json                   written last (kind "analysis"): its presence means the run finished

Counts only include readable images: a file is left out when its header cannot be read (always
checked) or, with `verify=True`, when a full decode fails (e.g. a truncated JPEG).
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers/CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from imagenette_lab.data.classes import display_name  # noqa: E402
from imagenette_lab.data.dataset import (  # noqa: E402
    BadImageError,
    check_root,
    index_split,
    list_splits,
    load_rgb,
)
from imagenette_lab.errors import UserError  # noqa: E402
from imagenette_lab.runrecord import RUN_JSON, dataset_info  # noqa: E402
from imagenette_lab.utils import (  # noqa: E402
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    prepare_out_dir,
    write_run_json,
)

log = logging.getLogger(__name__)

DESCRIBE_COLUMNS = ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]
TOTAL = "TOTAL"  # wnid of the totals row in class_counts
ALL = "ALL"  # wnid of the all-classes row per split in filesize_stats
UNREADABLE_COLUMNS = ["split", "path", "reason"]


# ----------------------------------------------------------------------------- indexing


def resolve_splits(root: Path, splits: list[str] | None) -> list[str]:
    """The requested splits (default: every split folder with class folders), validated."""
    try:
        available = list_splits(root)
    except PermissionError as e:
        raise UserError(f"cannot list dataset root {root}: {e.strerror}") from None
    if not splits:
        return available
    missing = [s for s in splits if s not in available]
    if missing:
        raise UserError(
            f"split(s) {', '.join(missing)} not found in {root} "
            f"(available: {', '.join(available)})"
        )
    return list(dict.fromkeys(splits))  # drop repeats, keep order


def collect(
    root: Path, splits: list[str], verify: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[str]]]:
    """(images, unreadable, classes per split).

    Each split is indexed on its own class folders, so a class present in only some splits is
    kept (and counted 0 elsewhere) instead of being an error.
    """
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, str]] = []
    classes: dict[str, list[str]] = {}
    for split in splits:
        idx = index_split(root, split)
        classes[split] = idx.classes
        bad += [{"split": split, "path": s.path, "reason": s.reason} for s in idx.skipped]
        for s in idx.samples:
            if verify:
                try:
                    load_rgb(s.path)
                except BadImageError as e:
                    reason = f"decode failed: {e}"
                    bad.append({"split": split, "path": str(s.path), "reason": reason})
                    continue
            rows.append(
                {
                    "split": split,
                    "wnid": idx.classes[s.label],
                    "path": str(s.path),
                    "nbytes": s.nbytes,
                    "width": s.width,
                    "height": s.height,
                    "mode": s.mode,
                }
            )
    columns = ["split", "wnid", "path", "nbytes", "width", "height", "mode"]
    images = pd.DataFrame(rows, columns=columns)
    images["name"] = images["wnid"].map(display_name)
    return images, pd.DataFrame(bad, columns=UNREADABLE_COLUMNS), classes


# ----------------------------------------------------------------------------- tables


def class_counts(images: pd.DataFrame, classes: dict[str, list[str]]) -> pd.DataFrame:
    """Table 1: wnid, name, then `<split>_count`, `<split>_pct` per split, and a TOTAL row."""
    splits = list(classes)
    wnids = sorted(set().union(*classes.values()))
    counts = (
        pd.crosstab(images["wnid"], images["split"])
        .reindex(index=wnids, columns=splits, fill_value=0)
        .astype(int)
    )
    table = pd.DataFrame({"wnid": wnids, "name": [display_name(w) for w in wnids]})
    for split in splits:
        n = counts[split].to_numpy()
        table[f"{split}_count"] = n
        table[f"{split}_pct"] = 100.0 * n / n.sum() if n.sum() else 0.0
    total = {"wnid": TOTAL, "name": "total"}
    for split in splits:
        total[f"{split}_count"] = int(table[f"{split}_count"].sum())
        total[f"{split}_pct"] = float(table[f"{split}_pct"].sum())
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def filesize_stats(images: pd.DataFrame) -> pd.DataFrame:
    """Figure 3: describe() of file size in bytes per (split, class), plus an ALL row per split."""
    frames = []
    for split, grp in images.groupby("split", sort=False):
        per_class = grp.groupby("wnid")["nbytes"].describe()
        per_class.loc[ALL] = grp["nbytes"].describe()
        per_class = per_class[DESCRIBE_COLUMNS].rename_axis("wnid").reset_index()
        per_class.insert(0, "split", split)
        frames.append(per_class)
    stats = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["split", "wnid", *DESCRIBE_COLUMNS]
    )
    stats.insert(2, "name", [display_name(w) if w != ALL else "all classes" for w in stats["wnid"]])
    stats["count"] = stats["count"].astype(int)
    return stats


def image_stats(images: pd.DataFrame) -> pd.DataFrame:
    """Per (split, class): image count, width/height min/mean/max, and one count column per mode."""
    keys = ["split", "wnid"]
    g = images.groupby(keys, sort=False)
    dims = g.agg(
        count=("path", "size"),
        width_min=("width", "min"),
        width_mean=("width", "mean"),
        width_max=("width", "max"),
        height_min=("height", "min"),
        height_mean=("height", "mean"),
        height_max=("height", "max"),
    )
    modes = pd.crosstab([images["split"], images["wnid"]], images["mode"]).add_prefix("mode_")
    out = dims.join(modes).fillna(0).reset_index()
    out.insert(2, "name", out["wnid"].map(display_name))
    return out


def markdown_table(
    df: pd.DataFrame, floatfmt: str = "{:,.0f}", formats: dict[str, str] | None = None
) -> str:
    """GitHub Markdown table (pandas' to_markdown needs tabulate, which is not a dependency).

    Floats use `formats[column]` or `floatfmt`; numeric columns are right-aligned.
    """
    formats = formats or {}

    def cell(col: str, v: Any) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else formats.get(col, floatfmt).format(v)
        return str(v).replace("|", "\\|")

    cols = list(df.columns)
    header = "| " + " | ".join(map(str, cols)) + " |"
    align = "|" + "|".join(
        "---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in cols
    ) + "|"
    body = [
        "| " + " | ".join(cell(c, v) for c, v in zip(cols, row)) + " |"
        for row in df.itertuples(index=False)
    ]
    return "\n".join([header, align, *body]) + "\n"


def _counts_markdown(table: pd.DataFrame, splits: list[str]) -> str:
    shown = table[["wnid", "name"]].copy()
    for s in splits:
        shown[f"{s} count"] = table[f"{s}_count"].astype(int)
        shown[f"{s} %"] = table[f"{s}_pct"].astype(float)
    return markdown_table(shown, formats={f"{s} %": "{:.2f}" for s in splits})


# ----------------------------------------------------------------------------- figures


def _save(fig: plt.Figure, path: Path) -> Path:
    """Render to memory, then write atomically, and always close the figure."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_class_bars(table: pd.DataFrame, splits: list[str], suffix: str, path: Path) -> Path:
    """Grouped bars per class (readable names), one bar per split: suffix 'count' or 'pct'."""
    data = table[table["wnid"] != TOTAL].set_index("name")[[f"{s}_{suffix}" for s in splits]]
    data.columns = splits
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(data) + 2), 4.5))
    data.plot.bar(ax=ax, width=0.8, rot=45)
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%.0f" if suffix == "count" else "%.1f", fontsize=8, padding=1)
    pct = suffix == "pct"
    ax.set_ylabel("% of split" if pct else "images")
    ax.set_xlabel("")
    ax.set_title(f"Class distribution per split - {'percentages' if pct else 'counts'}")
    ax.margins(y=0.12)
    plt.setp(ax.get_xticklabels(), ha="right")
    # Outside the axes: inside, the legend covered the tallest bars.
    ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=10)
    return _save(fig, path)


def _short_bytes(x: float) -> str:
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


def plot_filesize_box(images: pd.DataFrame, path: Path) -> Path:
    """Box plot of file size per class, one panel per split; log x because sizes span decades."""
    splits = list(dict.fromkeys(images["split"]))
    wnids = sorted(images["wnid"].unique())  # same rows in every panel, table order
    n = max(1, len(splits))
    fig, axes = plt.subplots(
        1, n, sharex=True, sharey=True, squeeze=False,
        figsize=(1.5 + 4.5 * n, max(3.0, 0.45 * len(wnids) + 1.5)),
    )
    for ax, split in zip(axes[0], splits):
        grp = images[images["split"] == split]
        pos = [i for i, w in enumerate(wnids) if (grp["wnid"] == w).any()]
        ax.boxplot(
            [grp.loc[grp["wnid"] == wnids[i], "nbytes"].to_numpy() for i in pos],
            positions=pos, orientation="horizontal", flierprops={"markersize": 2},
            manage_ticks=False,
        )
        ax.set_xscale("log")
        # 1-2-5 ticks with short labels (5k, 1M): enough marks on a narrow range, no overlap.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _short_bytes(x)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("file size (bytes, log scale)")
        ax.set_title(split)
        ax.grid(axis="x", which="major", alpha=0.3)
    ax0 = axes[0][0]
    ax0.set_yticks(range(len(wnids)), [display_name(w) for w in wnids])
    ax0.set_ylim(len(wnids) - 0.5, -0.5)  # first class on top
    fig.suptitle("Image file size per class")
    return _save(fig, path)


# ----------------------------------------------------------------------------- entry point


def analyze_dataset(
    root: str | Path,
    out: str | Path,
    splits: list[str] | None = None,
    verify: bool = False,
    audit: dict[str, Any] | None = None,
    stage: str | None = None,
) -> dict[str, Any]:
    """Analyse `<root>/<split>/<class>/<image>` and write the tables/figures listed above.

    Returns the summary (also written to summary.json). Raises UserError for a missing root, a
    root without class folders, an unknown split, or an unwritable `out`.
    """
    started = time.time()
    root = check_root(root)
    splits = resolve_splits(root, splits)
    out = prepare_out_dir(out)
    # A stale run.json would claim an interrupted re-run had finished.
    (out / RUN_JSON).unlink(missing_ok=True)

    images, unreadable, classes = collect(root, splits, verify=verify)
    counts = class_counts(images, classes)
    sizes = filesize_stats(images)
    dims = image_stats(images)

    files: dict[str, Path] = {}

    def put_text(name: str, text: str) -> None:
        files[name] = out / name
        atomic_write_text(out / name, text)

    put_text("class_counts.csv", counts.to_csv(index=False))
    put_text("class_counts.md", "# Class distribution\n\n" + _counts_markdown(counts, splits))
    put_text("filesize_stats.csv", sizes.to_csv(index=False))
    put_text(
        "filesize_stats.md",
        "# Image file size (bytes) per class\n\n" + markdown_table(sizes),
    )
    put_text("image_stats.csv", dims.to_csv(index=False))
    put_text("unreadable.csv", unreadable.to_csv(index=False))
    files["class_counts.png"] = plot_class_bars(counts, splits, "count", out / "class_counts.png")
    files["class_percentages.png"] = plot_class_bars(
        counts, splits, "pct", out / "class_percentages.png"
    )
    files["filesize_box.png"] = plot_filesize_box(images, out / "filesize_box.png")

    per_class = counts[counts["wnid"] != TOTAL]
    split_summary: dict[str, Any] = {}
    for s in splits:
        present = per_class[per_class["wnid"].isin(classes[s])]
        pct = present.set_index("wnid")[f"{s}_pct"]
        split_summary[s] = {
            "total": int(present[f"{s}_count"].sum()),
            "classes": len(classes[s]),
            "counts": dict(zip(present["wnid"], present[f"{s}_count"].astype(int).tolist())),
            "min_pct": round(float(pct.min()), 4),
            "min_class": str(pct.idxmin()),
            "max_pct": round(float(pct.max()), 4),
            "max_class": str(pct.idxmax()),
            "unreadable": int((unreadable["split"] == s).sum()),
        }
    files["summary.json"] = out / "summary.json"
    summary = {
        "root": str(root),
        "splits": split_summary,
        "classes": {w: display_name(w) for w in per_class["wnid"]},
        "unreadable": len(unreadable),
        "verified_decode": verify,
        "files": {k: str(v) for k, v in files.items()},
    }
    if audit is not None:  # a finished `imagenette-lab audit` of this dataset (audit.link.condense)
        summary["audit"] = audit
    atomic_write_json(out / "summary.json", summary)
    write_run_json(
        out, "analysis", "analysis", started, stage=stage,
        root=str(root), dataset=dataset_info(root, sorted(per_class["wnid"])),
        summary={
            "splits": {s: v["total"] for s, v in split_summary.items()},
            "classes": len(per_class),
            "unreadable": len(unreadable),
            "verified_decode": verify,
        },
    )
    log.info("analysis of %s written to %s", root, out)
    return summary
