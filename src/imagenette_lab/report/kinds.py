"""What the report shows for each kind of run: analysis, zero-shot, train, evaluate, audit, seeds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from imagenette_lab import runrecord as rr
from imagenette_lab.report.collect import (
    ANALYSIS_EXPECTED,
    TRAIN_EXPECTED,
    class_column,
    load_variant,
    note_missing,
)
from imagenette_lab.report.display import (
    Run,
    Table,
    draw_curves,
    embed_image,
    fmt_number,
    folder_pictures,
    frame_table,
    is_number,
    read_csv,
    read_json,
)
from imagenette_lab.report.study import with_study_counts

OTHER_ANSWERS = ("other", "(other)")  # metrics.other_name: the class of an answer outside the dataset's


def _imagenette(run: Run) -> bool:
    return bool(run.record and run.record.dataset.is_imagenette)


# ----------------------------------------------------------------------------- analysis


def _image_stats(run: Run, df: pd.DataFrame) -> None:
    """Constant sizes and modes collapse into one sentence; only varying statistics get a table."""
    size_cols = [c for c in df.columns if c.startswith(("width_", "height_"))]
    mode_cols = [c for c in df.columns if c.startswith("mode_")]
    if size_cols and "count" in df.columns:
        n = int(pd.to_numeric(df["count"], errors="coerce").sum())
        widths = set(pd.to_numeric(df[[c for c in size_cols if c.startswith("width_")]].stack(), errors="coerce"))
        heights = set(pd.to_numeric(df[[c for c in size_cols if c.startswith("height_")]].stack(), errors="coerce"))
        words = {"L": "greyscale", "RGB": "colour (RGB)", "CMYK": "CMYK", "P": "palette", "RGBA": "RGBA"}
        modes = [words.get(c[5:], c[5:]) for c in mode_cols if pd.to_numeric(df[c], errors="coerce").fillna(0).sum() > 0]
        if len(widths) == 1 and len(heights) == 1:
            text = f"all {n:,} images are {int(widths.pop())} × {int(heights.pop())} px"
            if mode_cols and len(modes) > 1:
                counts = {words.get(c[5:], c[5:]): int(pd.to_numeric(df[c], errors="coerce").fillna(0).sum())
                          for c in mode_cols}
                text += "; " + ", ".join(f"{v:,} {k}" for k, v in counts.items() if v)
            elif modes:
                text += f", {modes[0]}"
            run.info.append(("Image size", text))
            return
    keep = [c for c in df.columns if c != "wnid" and (c not in mode_cols or df[c].nunique() > 1)]
    run.tables.append(frame_table(df[keep], "Image size per class (pixels)", max_rows=60))


def load_analysis(run: Run) -> None:
    d = run.path
    df = read_csv(run, d / "class_counts.csv")
    if df is not None and len(df.columns):
        if _imagenette(run):
            df = with_study_counts(df)
        cols = [c for c in df.columns if c != "wnid"]
        cap = "Images per class and share of each split" + ("; study: its Table 1" if "study train" in df else "")
        run.tables.append(frame_table(df[cols], cap, max_rows=1000))
    df = read_csv(run, d / "filesize_stats.csv")
    if df is not None and len(df.columns):
        df = class_column(df)
        table = frame_table(df[[c for c in df.columns if c != "wnid"]], "File size per class (bytes)", max_rows=1000)
        table.collapsed = len(df) > 12
        run.tables.append(table)
    df = read_csv(run, d / "image_stats.csv")
    if df is not None and len(df.columns):
        _image_stats(run, df)
    df = read_csv(run, d / "unreadable.csv")
    if df is not None:
        if len(df):
            run.tables.append(frame_table(df, f"Unreadable files skipped: {len(df):,}", max_rows=30))
        else:
            run.info.append(("Unreadable files", "none"))
    run.pictures = folder_pictures(run, d, ("class_counts.png", "class_percentages.png", "filesize_box.png"))
    note_missing(run, d, ANALYSIS_EXPECTED)


# ----------------------------------------------------------------------------- zero-shot


def out_of_set(run: Run, max_rows: int = 12) -> tuple[Table | None, list[tuple[str, str, int]], int]:
    """Where the 1000-way answers outside the dataset's classes went, from predictions.csv."""
    df = read_csv(run, run.path / rr.PREDICTIONS_CSV)
    need = {"true", "predicted_1000way", "predicted_1000way_label"}
    if df is None or not need <= set(df.columns):
        return None, [], 0
    out = df[df["predicted_1000way"].astype(str).isin(OTHER_ANSWERS)]
    if out.empty:
        return None, [], 0
    pairs = (out.groupby(["true", "predicted_1000way_label"]).size().sort_values(ascending=False, kind="stable")
             .reset_index(name="count"))
    top = [(str(t), str(p), int(c)) for t, p, c in pairs.itertuples(index=False)]
    table = frame_table(pairs.rename(columns={"true": "True class", "predicted_1000way_label": "ImageNet answer",
                                              "count": "Images"}),
                        f"Where the {len(out):,} answers outside the dataset's classes went (1000-way)",
                        max_rows=max_rows)
    return table, top, len(out)


def load_zero_shot(run: Run) -> None:
    d = run.path
    top = read_json(run, d / rr.METRICS_JSON)
    top = top if isinstance(top, dict) else {}
    keys = [k for k in rr.ZERO_SHOT_VARIANTS if (d / k).is_dir() or isinstance(top.get(k), dict)]
    n_classes = run.record.dataset.n_classes if run.record and run.record.dataset.n_classes else None
    for k in keys or list(rr.ZERO_SHOT_VARIANTS):
        v = load_variant(run, d / k, k, fallback=top.get(k), prefix=f"{k}/")
        if k == rr.RESTRICTED and n_classes:
            v.title = f"{n_classes}-way: the most likely of the dataset's {n_classes} classes"
        if k == rr.IMAGENET1000:
            table, _, _ = out_of_set(run)
            if table is not None:
                v.extra_tables.append(table)
        run.variants.append(v)
    note_missing(run, d, (rr.METRICS_JSON,))


# ----------------------------------------------------------------------------- train


def load_train(run: Run) -> None:
    d = run.path
    try:
        run.config_text = (d / rr.CONFIG).read_text() if (d / rr.CONFIG).is_file() else None
    except (OSError, UnicodeDecodeError) as e:
        run.problems.append(f"{rr.CONFIG}: unreadable ({e})")
    hist = read_csv(run, d / rr.HISTORY_CSV)
    curves = embed_image(run, d / rr.CURVES)
    if curves is None and hist is not None and len(hist):
        curves = draw_curves(run, hist)
    if curves is not None:
        curves.wide = True
        run.pictures.append(curves)
    if hist is not None and len(hist.columns):
        constant = [c for c in ("stage", "train_n", "val_n") if c in hist and hist[c].nunique() <= 1]
        if run.record and run.record.settings.feature_cache and "images_per_s" in hist:
            constant.append("images_per_s")  # the head's speed on cached features, not the model's
        run.tables.append(frame_table(hist.drop(columns=constant), "Per-epoch history", max_rows=200))
    meta = run.meta or {}
    fallback = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else None
    run.variants.append(load_variant(run, d / rr.EVAL, rr.EVAL, fallback=fallback, prefix=f"{rr.EVAL}/"))
    ckpts = d / rr.CHECKPOINTS
    if ckpts.is_dir():
        from imagenette_lab.utils import fmt_bytes

        for p in sorted(ckpts.glob("*.pt")):
            try:
                run.meta_rows.append((f"checkpoint {p.name}", fmt_bytes(p.stat().st_size)))
            except OSError:
                pass
    note_missing(run, d, TRAIN_EXPECTED)


def load_evaluate(run: Run) -> None:
    """`evaluate --out DIR`: the directory is itself an evaluation bundle."""
    run.variants.append(load_variant(run, run.path, rr.EVAL))


# ----------------------------------------------------------------------------- audit, seeds


def _words(key: str) -> str:
    return key.replace("_", " ").replace("-", " ").strip().capitalize()


def _short_paths(df: pd.DataFrame) -> pd.DataFrame:
    """File paths as `class/file.JPEG`: the dataset root repeated on every row says nothing."""
    df = df.copy()
    for c in df.columns:
        if c == "path" or c.startswith("path_"):
            df[c] = [f"{pp.parent.name}/{pp.name}" for pp in map(Path, df[c].astype(str))]
    return df


AUDIT_TABLES = (  # file, caption, columns shown (those present)
    ("duplicates.csv", "Closest duplicate pairs",
     ("split_a", "path_a", "split_b", "path_b", "methods", "phash_dist", "cosine", "same_label")),
    ("label_issues.csv", "Likely label errors",
     ("split", "path", "given_name", "suggested_name", "p_suggested", "score")),
    ("odd_images.csv", "Odd images", ("split", "class", "path", "issue", "value", "detail")),
)


def load_audit(run: Run) -> None:
    """`imagenette-lab audit`: leakage and duplicates, likely label errors, odd images, galleries."""
    from imagenette_lab.audit.link import condense  # json only: no torch

    d = run.path
    summary = read_json(run, d / rr.SUMMARY_JSON)
    if isinstance(summary, dict):
        a = condense(d, summary)
        if is_number(a.get("images")):
            run.info.append(("Images audited", fmt_number(a["images"])))
        pairs = a.get("duplicate_pairs") or {}
        if isinstance(pairs, dict) and pairs:
            run.info.append(("Duplicate pairs", ", ".join(f"{k.replace('-', ' – ')} {fmt_number(v)}"
                                                          for k, v in pairs.items())))
        if a.get("cross_split_pairs") is not None:
            run.info.append(("Across splits (leakage)", fmt_number(a["cross_split_pairs"])))
        if a.get("label_issues") is not None:
            run.info.append(("Likely label errors", fmt_number(a["label_issues"])))
        elif a.get("label_check_skipped"):
            run.info.append(("Likely label errors", f"not checked: {a['label_check_skipped']}"))
        odd = a.get("odd_images") or {}
        if isinstance(odd, dict):
            run.info.append(("Odd images", ", ".join(f"{k.replace('_', ' ')} {fmt_number(v)}"
                                                     for k, v in odd.items() if v) or "none"))
        total = (summary.get("timings_s") or {}).get("total") if isinstance(summary.get("timings_s"), dict) else None
        if is_number(total):
            rss = summary.get("peak_rss_mb")
            rss = max((v for v in rss.values() if is_number(v)), default=None) if isinstance(rss, dict) else rss
            run.info.append(("Audit time", f"{total:,.0f} s" + (f", peak memory {rss:,.0f} MB" if is_number(rss) else "")))
    for name, cap, cols in AUDIT_TABLES:
        df = read_csv(run, d / name)
        if df is not None and len(df.columns):
            keep = [c for c in cols if c in df.columns] or list(df.columns)
            run.tables.append(frame_table(_short_paths(df[keep]), f"{cap} ({len(df):,} in {name})", max_rows=10))
    run.pictures = folder_pictures(run, d, ("gallery_cross_split.png", "gallery_label_issues.png"))
    for p in run.pictures:
        p.wide = True
    note_missing(run, d, (rr.SUMMARY_JSON, "duplicates.csv", "label_issues.csv", "odd_images.csv"))


def load_seeds(run: Run) -> None:
    """`train --seeds N`: mean ± sd per metric, a per-seed table and the banded learning curves. The
    role, model and settings are those of the seed runs (read from the first one's run.json)."""
    from imagenette_lab.report import describe as D

    d = run.path
    data = read_json(run, d / rr.SEEDS_SUMMARY)
    data = data if isinstance(data, dict) else (run.meta or {})
    members = [Path(p) for p in data.get("runs") or [] if isinstance(p, str)]
    first = None
    if members and (members[0] / rr.RUN_JSON).is_file():
        try:
            first = rr.read_run(members[0])
        except Exception:  # noqa: BLE001 - a damaged member: the summary still shows
            first = None
    if first is not None:
        run.experiment = first.role
        head = f"{D.ROLE_LABELS[first.role]} · " if first.role in D.ROLE_LABELS else ""
        px = f", {first.settings.img_size} px" if first.settings.img_size else ""
        run.title = f"{head}{len(members)} seeds · {D.method(first)} · {D.model_phrase(first)}{px}"
        run.settings = [f"seeds {', '.join(str(r.get('seed')) for r in data.get('per_seed') or [])}"] + \
            [i for i in D.settings_items(first) if not i.startswith(("wall time", "reported"))]
    stats = data.get("summary") if isinstance(data.get("summary"), dict) else data.get("metrics")
    if isinstance(stats, dict):
        rows = []
        for k, s in stats.items():
            if isinstance(s, dict) and is_number(s.get("mean")):
                sd = f" ± {s['sd']:.4f}" if is_number(s.get("sd")) else ""
                span = (f"{s['min']:.4f} – {s['max']:.4f}" if is_number(s.get("min")) and is_number(s.get("max"))
                        else "")
                rows.append([_words(k), f"{s['mean']:.4f}{sd}", span, fmt_number(s.get("n", ""))])
        if rows:
            run.tables.append(Table(["Metric", "Mean ± sd", "Range", "Seeds"], rows, [False, True, True, True],
                                    "Across seeds (sd with ddof = 1)"))
    per = data.get("per_seed")
    if isinstance(per, list) and per and all(isinstance(r, dict) for r in per):
        df = pd.DataFrame(per).drop(columns=["run_dir"], errors="ignore")
        keep = [c for c in df.columns if not isinstance(df[c].iloc[0], (dict, list))]
        run.tables.append(frame_table(df[keep], "Per seed", max_rows=50))
    run.pictures = folder_pictures(run, d, (rr.SEEDS_CURVES,))
    for p in run.pictures:
        p.wide = True
    run.seed_members = [str(m.resolve()) for m in members[1:]]
