"""Run the whole audit and write its files (the contract other commands and the report read):

  duplicates.csv          one row per pair: both sides (split, class, path), methods, every score
  label_issues.csv        ranked suspects: given label, suggested label, self-confidence score
  odd_images.csv          split, class, path, issue, value, detail
  gallery_cross_split.png closest cross-split pairs (red frame: flagged as duplicates)
  gallery_label_issues.png top label suspects
  summary.json            counts per split pair, leakage, label issues, odd images, timings, peak RSS
  run.json                written last (kind "audit"): its presence means the audit finished
  cache/                  scan records and embeddings, reused by a rerun with the same settings
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from imagenette_lab.audit import duplicates as dup
from imagenette_lab.audit import embed, gallery, labels, odd, scan
from imagenette_lab.data.classes import display_name
from imagenette_lab.data.dataset import SplitIndex, check_root, find_classes, index_split
from imagenette_lab.runrecord import RUN_JSON
from imagenette_lab.utils import atomic_write_json, atomic_write_text, peak_rss_mib, prepare_out_dir, write_run_json

log = logging.getLogger(__name__)


@dataclass
class AuditConfig:
    root: str | Path
    out: str | Path = "runs/audit"
    splits: list[str] | None = None
    model: str = "efficientnet_lite0"
    img_size: int | None = None
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    amp: str = "off"
    seed: int = 0
    phash_max: int = 8  # bits of 64 (pHash; dHash must also be within dhash_max)
    dhash_max: int = 8
    cos_min: float = 0.92  # cosine of the (uncentred) embeddings; see the README audit section
    top_k: int = 5  # neighbours kept per image and method
    folds: int = 5
    label_c: float = 1.0
    label_check: bool = True
    gallery: int = 12
    limits: odd.OddLimits = field(default_factory=odd.OddLimits)


def _peak_rss_mb() -> dict[str, float | None]:
    return {"main": peak_rss_mib()}  # not children: see utils.peak_rss_mib


def index_dataset(root: Path, splits: list[str] | None) -> tuple[list[SplitIndex], pd.DataFrame, pd.DataFrame]:
    """(split indexes, item table, skipped-file table). All splits share the union of class folders."""
    from imagenette_lab.analysis import resolve_splits

    splits = resolve_splits(root, splits)
    classes = sorted(set().union(*(find_classes(root / s) for s in splits)))
    indexes = [index_split(root, s, classes) for s in splits]
    rows, bad = [], []
    for sid, idx in enumerate(indexes):
        for i, s in enumerate(idx.samples):
            rows.append((idx.split, sid, i, str(s.path), s.label, classes[s.label], s.nbytes, s.width,
                         s.height, s.mode))
        bad += [(idx.split, Path(k.path).parent.name, k.path, k.reason) for k in idx.skipped]
    items = pd.DataFrame(rows, columns=["split", "split_id", "idx", "path", "label", "class", "nbytes",
                                        "width", "height", "mode"])
    skipped = pd.DataFrame(bad, columns=["split", "class", "path", "reason"])
    return indexes, items, skipped


def _label(items: pd.DataFrame, r: int) -> str:
    return f"{items.at[r, 'split']} · {display_name(items.at[r, 'class'])}"


def _score_text(row: Any) -> str:
    parts = [f"cos {row.cosine:.3f}" if pd.notna(row.cosine) else "cos n/a"]
    if row.phash_dist >= 0:
        parts.append(f"pHash {int(row.phash_dist)}")
    if getattr(row, "methods", ""):
        parts.append(str(row.methods))
    return " · ".join(parts)


def cross_split_candidates(pairs: pd.DataFrame, closest: pd.DataFrame, items: pd.DataFrame,
                           scans: pd.DataFrame, n: int) -> pd.DataFrame:
    """The n closest cross-split pairs: flagged duplicates first, then by cosine, each pair once."""
    sid = items["split_id"].to_numpy()
    flagged = pairs[sid[pairs["a"]] != sid[pairs["b"]]].assign(flagged=True)
    near = closest.assign(a=np.minimum(closest["a"], closest["b"]), b=np.maximum(closest["a"], closest["b"]))
    near = near.drop_duplicates(["a", "b"]).sort_values("cosine", ascending=False).head(4 * n)
    ph, dh = scans["phash"].to_numpy(np.int64), scans["dhash"].to_numpy(np.int64)
    near = near.assign(methods="", flagged=False, phash_dist=dup.hamming(ph[near["a"]], ph[near["b"]]),
                       dhash_dist=dup.hamming(dh[near["a"]], dh[near["b"]]))
    both = pd.concat([flagged, near], ignore_index=True).drop_duplicates(["a", "b"], keep="first")
    return both.sort_values(["flagged", "cosine"], ascending=[False, False]).head(n)


def write_duplicates(pairs: pd.DataFrame, items: pd.DataFrame, splits: list[str]) -> pd.DataFrame:
    a, b = pairs["a"].to_numpy(np.int64), pairs["b"].to_numpy(np.int64)
    side = {}
    for s, r in (("a", a), ("b", b)):
        side.update({f"split_{s}": items["split"].to_numpy()[r], f"class_{s}": items["class"].to_numpy()[r],
                     f"path_{s}": items["path"].to_numpy()[r]})
    sid = items["split_id"].to_numpy()
    table = pd.DataFrame({
        **side,
        "split_pair": [f"{splits[min(x, y)]}-{splits[max(x, y)]}" for x, y in zip(sid[a], sid[b])],
        "cross_split": sid[a] != sid[b],
        "same_label": items["label"].to_numpy()[a] == items["label"].to_numpy()[b],
        **{c: pairs[c].to_numpy() for c in ("methods", "same_file", "phash_dist", "dhash_dist", "cosine")},
    })
    return table.sort_values(["cross_split", "same_file", "cosine"], ascending=[False, False, False],
                             na_position="last")


def run_audit(cfg: AuditConfig) -> dict[str, Any]:
    from imagenette_lab.engine.evaluate import resolve_device

    started = time.time()
    t: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        t[name] = round(now - clock, 2)
        clock = now

    root = check_root(cfg.root)
    out = prepare_out_dir(cfg.out)
    (out / RUN_JSON).unlink(missing_ok=True)  # a stale one would claim an interrupted rerun finished
    scan.require_imagehash()
    if cfg.label_check:
        labels.require_cleanlab()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    indexes, items, skipped = index_dataset(root, cfg.splits)
    splits = [ix.split for ix in indexes]
    classes = indexes[0].classes
    lap("index")
    scans = scan.scan(items["path"].tolist(), out / "cache" / "scan.csv", cfg.workers)
    lap("scan")

    feats, emb_info = embed.embed_splits(
        cfg.model, indexes, out / "cache" / "features", img_size=cfg.img_size, batch_size=cfg.batch_size,
        workers=cfg.workers, device=device, amp="off" if cfg.model == embed.PIXELS else cfg.amp, seed=cfg.seed)
    offsets = np.cumsum([0] + [len(ix) for ix in indexes])
    got = [(k, f) for k, f in enumerate(feats) if f.n]  # a split whose every image failed to decode has none
    emb = torch.cat([f.x.float() for _, f in got]) if got else None
    emb_rows = (np.concatenate([f.indices.numpy() + offsets[k] for k, f in got]) if got
                else np.empty(0, dtype=np.int64))
    lap("embed")

    pairs, closest = dup.find_duplicates(items, scans, emb, emb_rows, phash_max=cfg.phash_max,
                                         dhash_max=cfg.dhash_max, cos_min=cfg.cos_min, top_k=cfg.top_k)
    dup_table = write_duplicates(pairs, items, splits)
    atomic_write_text(out / "duplicates.csv", dup_table.to_csv(index=False))
    counts = dup.count_pairs(pairs, items, splits)
    counts["thresholds"] = {"phash_max": cfg.phash_max, "dhash_max": cfg.dhash_max, "cos_min": cfg.cos_min,
                            "top_k": cfg.top_k}
    lap("duplicates")

    if cfg.label_check and emb is not None:
        y = items["label"].to_numpy()[emb_rows]
        label_info, suspects = labels.find_label_issues(emb.numpy(), y, len(classes), folds=cfg.folds,
                                                        seed=cfg.seed, c=cfg.label_c)
    else:
        label_info, suspects = {"skipped": "turned off (--no-label-check)" if not cfg.label_check
                                else "no image could be decoded"}, None
    cols = ["rank", "split", "path", "given", "given_name", "suggested", "suggested_name", "score", "p_suggested"]
    lab = pd.DataFrame(columns=cols)
    if suspects is not None and len(suspects):
        r = emb_rows[suspects["row"]]
        lab = pd.DataFrame({
            "rank": np.arange(1, len(r) + 1), "split": items["split"].to_numpy()[r],
            "path": items["path"].to_numpy()[r],
            "given": [classes[i] for i in suspects["given"]],
            "given_name": [display_name(classes[i]) for i in suspects["given"]],
            "suggested": [classes[i] for i in suspects["suggested"]],
            "suggested_name": [display_name(classes[i]) for i in suspects["suggested"]],
            "score": np.round(suspects["score"], 5), "p_suggested": np.round(suspects["p_suggested"], 4)})
        label_info["by_split"] = lab["split"].value_counts().to_dict()
        label_info["by_given_class"] = lab["given"].value_counts().to_dict()
    atomic_write_text(out / "label_issues.csv", lab.to_csv(index=False))
    lap("labels")

    odd_table, odd_summary = odd.find_odd(items, scans, skipped, cfg.limits)
    atomic_write_text(out / "odd_images.csv", odd_table.to_csv(index=False))
    lap("odd")

    cand = cross_split_candidates(pairs, closest, items, scans, cfg.gallery)
    gallery.pair_gallery(
        [{"path_a": items.at[int(p.a), "path"], "label_a": _label(items, int(p.a)),
          "path_b": items.at[int(p.b), "path"], "label_b": _label(items, int(p.b)),
          "score": _score_text(p), "flagged": bool(p.flagged)} for p in cand.itertuples()],
        out / "gallery_cross_split.png",
        f"Closest cross-split pairs ({counts['cross_split_pairs']} flagged; red = flagged)",
        "no images in other splits to compare with")
    gallery.image_gallery(
        [{"path": row.path, "caption": f"{row.split} #{row.rank} · {Path(row.path).name}\n"
          f"given: {row.given_name}\nsuggests: {row.suggested_name} (p {row.p_suggested:.2f})"}
         for row in lab.head(cfg.gallery).itertuples()],
        out / "gallery_label_issues.png", f"Top likely label errors ({len(lab)} found)",
        label_info.get("skipped", "no likely label errors found"))
    lap("galleries")

    split_info = {ix.split: {"images": len(ix), "skipped": len(ix.skipped)} for ix in indexes}
    summary = {
        "root": str(root),
        "splits": split_info,
        "classes": {c: display_name(c) for c in classes},
        "images": int(len(items)),
        "duplicates": counts,
        "leakage": {"cross_split_pairs": counts["cross_split_pairs"],
                    "by_split_pair": {k: v for k, v in counts["pairs"].items()
                                      if k.split("-")[0] != k.split("-")[1]}},
        "label_issues": label_info,
        "odd_images": odd_summary,
        "embedding": emb_info,
        "timings_s": {**t, "total": round(time.time() - started, 2)},
        "peak_rss_mb": _peak_rss_mb(),
        "files": {n: str(out / n) for n in ("duplicates.csv", "label_issues.csv", "odd_images.csv",
                                           "gallery_cross_split.png", "gallery_label_issues.png")},
    }
    atomic_write_json(out / "summary.json", summary)
    write_run_json(out, "audit", "audit", started, root=str(root), model=cfg.model,
                   summary={"images": summary["images"], "cross_split_pairs": counts["cross_split_pairs"],
                            "label_issues": label_info.get("issues"),
                            "odd": {k: sum(v.get(k, 0) for v in odd_summary["counts"].values())
                                    for k in ("unreadable", "near_blank", "tiny", "extreme_aspect")}})
    log.info("audit of %s written to %s", root, out)
    return summary
