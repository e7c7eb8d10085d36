"""`train --seeds N`: the same recipe with N seeds in sibling run folders, then a summary of the spread.

Seed `cfg.seed` keeps the run name (so a study's stage folder stays where the report looks); seed
cfg.seed + i goes to `<name>_seed<seed>`. `<name>_seeds/` holds summary.json (kind "seeds": mean ± sd
of each metric over the seeds and a per-seed table), summary.csv, curves_seeds.png (mean with a
± 1 sd band per epoch) and run.json. A finished seed is reused on a rerun, an interrupted one resumed.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from imagenette_lab.config import RunConfig
from imagenette_lab.errors import UserError
from imagenette_lab.utils import atomic_write_json, atomic_write_text, prepare_out_dir, write_run_json

log = logging.getLogger(__name__)

METRICS = ("accuracy", "macro_precision", "macro_recall", "macro_f1")


def seed_runs(cfg: RunConfig, n: int) -> list[RunConfig]:
    if n < 1:
        raise UserError(f"--seeds must be at least 1, got {n}")
    out = []
    for i in range(n):
        c = copy.deepcopy(cfg)
        c.seed = cfg.seed + i
        c.name = cfg.name if i == 0 else f"{cfg.name}_seed{c.seed}"
        out.append(c)
    return out


def train_seeds(cfg: RunConfig, n: int, *, overwrite: bool = False) -> dict[str, Any]:
    """Train `n` seeds (reusing finished ones) and write `<out_dir>/<name>_seeds/`; returns the summary."""
    from imagenette_lab.engine.train import train

    started = time.time()
    runs = []
    for c in seed_runs(cfg, n):
        run_dir = Path(c.out_dir).expanduser() / c.name
        if (run_dir / "run.json").is_file() and not overwrite:
            log.info("seed %d: already complete in %s, reused", c.seed, run_dir)
        else:
            resume = run_dir if (run_dir / "checkpoints" / "last.pt").is_file() and not overwrite else None
            res = train(c, resume=resume, overwrite=True)
            if res["status"] != "complete":
                return res  # interrupted: the rerun resumes this seed
        runs.append(run_dir)
    summary = summarize(runs, Path(cfg.out_dir).expanduser() / f"{cfg.name}_seeds", name=cfg.name, started=started)
    return {**summary, "status": "complete", "exit_code": 0}


def summarize(run_dirs: list[Path], out: str | Path, *, name: str = "seeds",
              started: float | None = None) -> dict[str, Any]:
    """Mean ± sd (ddof=1) of each run's final metrics, a per-seed table and the banded learning curves."""
    started = started or time.time()
    rows = []
    for d in run_dirs:
        meta = json.loads((Path(d) / "run.json").read_text())
        seed = _seed_of(Path(d))
        rows.append({"seed": seed, "run_dir": str(d), "selected_epoch": meta.get("best_epoch"),
                     **{k: (meta.get("metrics") or {}).get(k) for k in METRICS}})
    table = pd.DataFrame(rows)
    stats = {}
    for k in METRICS:
        v = table[k].dropna().to_numpy(float)
        stats[k] = {"mean": float(v.mean()) if v.size else None,
                    "sd": float(v.std(ddof=1)) if v.size > 1 else None,
                    "min": float(v.min()) if v.size else None, "max": float(v.max()) if v.size else None,
                    "n": int(v.size)}
    out_dir = prepare_out_dir(out)
    summary = {"kind": "seeds", "name": name, "n_seeds": len(rows), "metrics": stats, "per_seed": rows,
               "runs": [str(d) for d in run_dirs]}
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_write_text(out_dir / "summary.csv", table.to_csv(index=False))
    histories = [pd.read_csv(Path(d) / "history.csv") for d in run_dirs if (Path(d) / "history.csv").is_file()]
    if histories:
        plot_seed_curves(histories, out_dir / "curves_seeds.png", title=f"{name}: {len(histories)} seeds")
    write_run_json(out_dir, "seeds", f"{name}_seeds", started, n_seeds=len(rows), runs=summary["runs"],
                   metrics={k: stats[k]["mean"] for k in METRICS},
                   metrics_sd={k: stats[k]["sd"] for k in METRICS})
    log.info("%d seeds of %s: accuracy %.4f ± %s", len(rows), name, stats["accuracy"]["mean"] or float("nan"),
             "-" if stats["accuracy"]["sd"] is None else f"{stats['accuracy']['sd']:.4f}")
    return summary


def _seed_of(run_dir: Path) -> int | None:
    try:
        import yaml

        return int(yaml.safe_load((run_dir / "config.yaml").read_text())["seed"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def curve_band(histories: list[pd.DataFrame], column: str) -> pd.DataFrame:
    """Per epoch: mean, sd and count of `column` over the runs that measured it."""
    frames = [h[["epoch", column]].dropna() for h in histories if column in h]
    if not frames:
        return pd.DataFrame(columns=["epoch", "mean", "sd", "n"])
    g = pd.concat(frames).groupby("epoch")[column]
    return pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1).fillna(0.0), "n": g.count()}).reset_index()


def plot_seed_curves(histories: list[pd.DataFrame], out_png: str | Path, title: str = "") -> Path:
    """Accuracy and loss per epoch: the mean over seeds as a line, ± 1 sd as a band."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from imagenette_lab.plots import _save

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("acc", "loss")):
        for split, style in (("train", "-"), ("val", "--"), ("holdout", ":")):
            band = curve_band(histories, f"{split}_{metric}")
            if band.empty:
                continue
            x, m, s = band["epoch"].to_numpy(float), band["mean"].to_numpy(float), band["sd"].to_numpy(float)
            line = ax.plot(x, m, style, marker="o", markersize=3, label=f"{split} (mean)")[0]
            ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.set_title(("Accuracy" if metric == "acc" else "Loss") + " (band: ± 1 sd over seeds)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out_png)

