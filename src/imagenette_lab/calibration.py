"""Can the confidences be trusted? ECE/MCE, reliability diagrams and temperature scaling from saved logits.

Everything works from an evaluation bundle's saved logits (`predictions.npz`), so old runs are
calibrated without rerunning their model. The temperature is fitted on a slice held out from the
*train* split (`<run>/holdout/predictions.npz`) -- never on the split whose numbers are reported --
by minimising the negative log-likelihood over log T (Guo et al. 2017), within T_BOUNDS. Dividing logits by one
positive T never changes the argmax, so accuracy is untouched.

Writes `calibration.json` ({ece, mce, ece_after, mce_after, temperature, nll_before, nll_after,
n_bins, fitted_on, ...}) and `reliability.png` into the eval dir.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from imagenette_lab.errors import UserError
from imagenette_lab.utils import atomic_write_json

log = logging.getLogger(__name__)

N_BINS = 15
NPZ = "predictions.npz"
HOLDOUT_DIR = "holdout"
# A run directory's eval bundles: train's eval/, zero-shot's two variants.
EVAL_DIRS = ("eval", "restricted", "imagenet1000")


# --- metrics ----------------------------------------------------------------------------------------


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    m = z.max(axis=1, keepdims=True)
    log_norm = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(log_norm - z[np.arange(len(z)), targets]))


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    """Equal-width confidence bins on [0, 1]: bin b holds (b/n, (b+1)/n] (0 goes to the first).

    Returns per-bin count, accuracy and mean confidence (None for empty bins), ECE (the count-weighted
    mean |accuracy - confidence|) and MCE (the largest gap over non-empty bins).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.shape != ok.shape or conf.ndim != 1:
        raise ValueError(f"confidence {conf.shape} and correct {ok.shape} must be equal-length vectors")
    if len(conf) == 0:
        raise UserError("no predictions to calibrate")
    b = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    acc = np.bincount(b, weights=ok, minlength=n_bins)
    mean_conf = np.bincount(b, weights=conf, minlength=n_bins)
    nonempty = count > 0
    acc[nonempty] /= count[nonempty]
    mean_conf[nonempty] /= count[nonempty]
    gap = np.abs(acc - mean_conf)
    return {
        "ece": float(np.sum(count * gap) / len(conf)),
        "mce": float(gap[nonempty].max()),
        "count": count.tolist(),
        "accuracy": [float(a) if n else None for a, n in zip(acc, count)],
        "confidence": [float(c) if n else None for c, n in zip(mean_conf, count)],
    }


def ece_mce(probs: np.ndarray, targets: np.ndarray, n_bins: int = N_BINS) -> tuple[float, float]:
    """(ECE, MCE) of the top-1 predictions of a probability matrix."""
    probs = np.asarray(probs, dtype=np.float64)
    bins = reliability_bins(probs.max(axis=1), probs.argmax(axis=1) == np.asarray(targets), n_bins)
    return bins["ece"], bins["mce"]


T_BOUNDS = (0.01, 100.0)  # a tiny or all-wrong holdout would otherwise push T towards 0 or infinity


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The T in T_BOUNDS minimising NLL(softmax(logits / T)).

    One-dimensional and convex in 1/T, so a bounded scalar search over log T (scipy) finds it
    reliably; the bounds matter only for degenerate holdouts (reported as `temperature_at_bound`).
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.int64)
    if len(z) == 0:
        raise UserError("no held-out predictions to fit a temperature on")
    if not np.isfinite(z).all():
        raise UserError("the held-out logits are not all finite")
    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    res = minimize_scalar(lambda log_t: nll(z, y, float(np.exp(log_t))), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-6})
    return float(np.exp(res.x))


# --- end to end --------------------------------------------------------------------------------------


def calibrate(logits: np.ndarray, targets: np.ndarray, holdout: tuple[np.ndarray, np.ndarray] | None = None,
              *, fitted_on: str | None = None, n_bins: int = N_BINS) -> dict[str, Any]:
    """Calibration summary of eval `logits`; with `holdout` (logits, targets) also temperature scaling."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(targets):
        raise UserError(f"logits {logits.shape} and targets {targets.shape} do not match")
    probs = softmax(logits)
    pred = probs.argmax(axis=1)
    before = reliability_bins(probs.max(axis=1), pred == targets, n_bins)
    out: dict[str, Any] = {
        "ece": before["ece"], "mce": before["mce"], "ece_after": None, "mce_after": None,
        "temperature": None, "nll_before": nll(logits, targets), "nll_after": None,
        "n_bins": n_bins, "fitted_on": None, "n": int(len(targets)), "n_holdout": 0,
        "accuracy": float(np.mean(pred == targets)), "bins": before,
    }
    if holdout is None:
        out["note"] = "no held-out train slice: temperature scaling skipped"
        return out
    h_logits, h_targets = np.asarray(holdout[0], dtype=np.float64), np.asarray(holdout[1], dtype=np.int64)
    if h_logits.ndim != 2 or h_logits.shape[1] != logits.shape[1]:
        out["note"] = (f"held-out logits have {h_logits.shape[1:]} columns, the eval logits "
                       f"{logits.shape[1]}: temperature scaling skipped")
        return out
    t = fit_temperature(h_logits, h_targets)
    at_bound = not (T_BOUNDS[0] * 1.01 < t < T_BOUNDS[1] / 1.01)
    scaled = softmax(logits, t)
    after = reliability_bins(scaled.max(axis=1), scaled.argmax(axis=1) == targets, n_bins)
    out.update(
        ece_after=after["ece"], mce_after=after["mce"], temperature=t, nll_after=nll(logits, targets, t),
        fitted_on=fitted_on or f"{len(h_targets)} held-out train images", n_holdout=int(len(h_targets)),
        accuracy_after=float(np.mean(scaled.argmax(axis=1) == targets)), bins_after=after,
        holdout_nll_before=nll(h_logits, h_targets), holdout_nll_after=nll(h_logits, h_targets, t),
        temperature_at_bound=at_bound,
    )
    if at_bound:
        out["note"] = (f"the temperature hit its bound {T_BOUNDS}: the {len(h_targets)} held-out images do not "
                       "pin it down (too few, or all wrong/all right with extreme confidence)")
    return out


def _panel(ax: Any, bins: dict[str, Any], label: str) -> None:
    n_bins = len(bins["count"])
    width = 1.0 / n_bins
    centers = (np.arange(n_bins) + 0.5) * width
    acc = np.array([a if a is not None else np.nan for a in bins["accuracy"]])
    conf = np.array([c if c is not None else np.nan for c in bins["confidence"]])
    has = ~np.isnan(acc)
    ax.bar(centers[has], acc[has], width=width, color="#4c72b0", edgecolor="white", label="accuracy")
    # The gap between what the model claims (mean confidence) and what it achieves, per bin.
    ax.bar(centers[has], (conf - acc)[has], bottom=acc[has], width=width, color="#dd5555", alpha=0.45,
           edgecolor="#aa2222", label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1.2, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)", fontsize=13)
    ax.set_ylabel("accuracy", fontsize=13)
    ax.tick_params(labelsize=11)
    ax.set_title(label, fontsize=14)
    ax.text(0.04, 0.95, f"ECE {bins['ece']:.3f}\nMCE {bins['mce']:.3f}", transform=ax.transAxes, va="top",
            fontsize=14, bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#999999"})
    ax.grid(alpha=0.3)


def plot_reliability(summary: dict[str, Any], out_png: str | Path, title: str = "") -> Path:
    """Reliability diagram(s): before temperature scaling and, when fitted, after it."""
    import matplotlib.pyplot as plt

    from imagenette_lab.plots import _save

    after = summary.get("bins_after")
    fig, axes = plt.subplots(1, 2 if after else 1, figsize=(10.5 if after else 6.2, 5.4), squeeze=False)
    _panel(axes[0, 0], summary["bins"], "before (T = 1)")
    if after:
        _panel(axes[0, 1], after, f"after temperature scaling (T = {summary['temperature']:.2f})")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=12, frameon=False)
    n = f"{summary.get('n', '?')} images, {len(summary['bins']['count'])} bins"
    fig.suptitle(f"{title + ': ' if title else ''}reliability ({n})", fontsize=15)
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # the legend sits below the panels, never over the bars
    return _save(fig, out_png)


def save_logits(folder: str | Path, logits: np.ndarray, targets: np.ndarray, indices: np.ndarray,
                paths: list[str], class_names: list[str]) -> Path:
    """`<folder>/predictions.npz` in the evaluation-bundle contract (what Predictions.load reads)."""
    import io

    from imagenette_lab.utils import atomic_write_bytes

    path = Path(folder) / NPZ
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # i11's writer when present: the same keys plus its header
        from imagenette_lab.predictions import Predictions  # type: ignore[import-not-found]

        data = Predictions(logits, targets, indices, list(paths), list(class_names), name="holdout").to_bytes()
    except (ImportError, AttributeError, TypeError):
        buf = io.BytesIO()
        np.savez(buf, logits=np.asarray(logits, dtype=np.float32), targets=np.asarray(targets, dtype=np.int64),
                 indices=np.asarray(indices, dtype=np.int64), paths=np.asarray(paths, dtype=str),
                 class_names=np.asarray(class_names, dtype=str))
        data = buf.getvalue()
    atomic_write_bytes(path, data)
    return path


def load_logits(folder: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(logits, targets) from `<folder>/predictions.npz` (the evaluation-bundle contract), or None.

    Bundles whose logits cover more outputs than classes (zero-shot's 1000-way view, with a "columns"
    map) give all K logits and the targets' column indices: the K-way classifier's calibration.
    """
    path = Path(folder) / NPZ
    if not path.is_file():
        return None
    try:  # i11's reader when present (it validates the bundle); the contract's keys otherwise
        from imagenette_lab.predictions import Predictions  # type: ignore[import-not-found]

        p = Predictions.load(folder)
        logits, targets, columns = p.logits, p.targets, p.columns
    except (ImportError, AttributeError, TypeError, UserError):
        try:
            with np.load(path, allow_pickle=False) as d:
                logits, targets = d["logits"], d["targets"]
                columns = d["columns"] if "columns" in d.files else None
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{path} is not a readable predictions file ({e})") from None
    targets = np.asarray(targets, dtype=np.int64)
    labelled = targets >= 0  # -1: files outside a class folder
    logits, targets = np.asarray(logits, dtype=np.float64)[labelled], targets[labelled]
    if columns is not None:
        targets = np.asarray(columns, dtype=np.int64)[targets]
    return logits, targets


def _from_csv(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(confidence, correct) from an older bundle's predictions.csv: enough for ECE, not for T."""
    import pandas as pd

    path = folder / "predictions.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    if not {"confidence", "correct"} <= set(df.columns):
        return None
    df = df.dropna(subset=["confidence"])
    return df["confidence"].to_numpy(float), df["correct"].astype(bool).to_numpy()


def write_calibration(eval_dir: str | Path, summary: dict[str, Any], title: str = "") -> dict[str, Any]:
    """calibration.json + reliability.png in `eval_dir`."""
    eval_dir = Path(eval_dir)
    eval_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(eval_dir / "calibration.json", summary)
    plot_reliability(summary, eval_dir / "reliability.png", title=title)
    _merge_into_metrics(eval_dir, summary)
    return summary


def _merge_into_metrics(eval_dir: Path, summary: dict[str, Any]) -> None:
    """The headline numbers also go into the bundle's metrics.json (key "calibration")."""
    path = eval_dir / "metrics.json"
    if not path.is_file():
        return
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    metrics["calibration"] = {k: summary.get(k) for k in
                              ("ece", "mce", "ece_after", "mce_after", "temperature", "nll_before", "nll_after",
                               "n_bins", "fitted_on")}
    atomic_write_json(path, metrics)


def calibrate_logits(eval_dir: str | Path, logits: Any, targets: Any, holdout_dir: str | Path | None,
                     title: str = "") -> dict[str, Any] | None:
    """Pipelines' hook: calibrate in-memory eval logits with `<holdout_dir>/predictions.npz` if it exists.

    Never fails the run: an unusable holdout file is logged and calibration goes on without it.
    """
    ho = None
    if holdout_dir is not None:
        try:
            ho = load_logits(holdout_dir)
        except UserError as e:
            log.warning("calibration without temperature scaling: %s", e)
    where = f"{len(ho[1])} held-out train images ({holdout_dir})" if ho is not None else None
    summary = calibrate(np.asarray(logits), np.asarray(targets), holdout=ho, fitted_on=where)
    write_calibration(eval_dir, summary, title=title)
    t = summary["temperature"]
    log.info("calibration: ECE %.4f%s", summary["ece"],
             f" -> {summary['ece_after']:.4f} with T = {t:.3f} (fitted on {where})" if t else
             " (no held-out train slice: no temperature scaling)")
    return summary


def calibrate_eval_dir(eval_dir: str | Path, holdout_dir: str | Path | None = None,
                       title: str = "") -> dict[str, Any]:
    """Calibrate one saved evaluation bundle; the temperature comes from `holdout_dir`'s logits."""
    eval_dir = Path(eval_dir)
    ev = load_logits(eval_dir)
    ho = load_logits(holdout_dir) if holdout_dir is not None else None
    if ev is None:
        legacy = _from_csv(eval_dir)
        if legacy is None:
            raise UserError(f"{eval_dir} has neither {NPZ} nor a predictions.csv with confidences")
        bins = reliability_bins(*legacy)
        summary = {"ece": bins["ece"], "mce": bins["mce"], "ece_after": None, "mce_after": None,
                   "temperature": None, "nll_before": None, "nll_after": None, "n_bins": N_BINS,
                   "fitted_on": None, "n": int(len(legacy[0])), "bins": bins,
                   "note": f"no {NPZ} (older run): ECE from predictions.csv, no temperature scaling"}
    else:
        where = f"{len(ho[1])} held-out train images ({holdout_dir})" if ho is not None else None
        summary = calibrate(*ev, holdout=ho, fitted_on=where)
    write_calibration(eval_dir, summary, title=title or eval_dir.name)
    return summary


def _has_temperature(d: Path) -> bool:
    try:
        return json.loads((d / "calibration.json").read_text()).get("temperature") is not None
    except (OSError, ValueError):
        return False


def calibrate_run(path: str | Path, holdout: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Every evaluation bundle of a run directory (or one eval dir); holdout defaults to `<run>/holdout`."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"{path} is not a directory")
    dirs = [path / d for d in EVAL_DIRS if (path / d).is_dir()]
    run = path
    if not dirs:
        dirs, run = [path], path.parent
    hold = Path(holdout).expanduser() if holdout else run / HOLDOUT_DIR
    if holdout and load_logits(hold) is None:
        raise UserError(f"{hold} has no {NPZ}")
    out = {}
    for d in dirs:
        if not ((d / NPZ).is_file() or (d / "predictions.csv").is_file()):
            continue
        if not (d / NPZ).is_file() and _has_temperature(d):
            # Written by the pipeline from its logits in memory: the CSV could only make it worse.
            out[str(d)] = json.loads((d / "calibration.json").read_text())
            log.info("%s: keeping calibration.json (no %s to recompute it from)", d, NPZ)
            continue
        out[str(d)] = calibrate_eval_dir(d, hold if (hold / NPZ).is_file() else None,
                                         title=f"{run.name}/{d.name}")
    if not out:
        raise UserError(f"no evaluation bundle ({NPZ} or predictions.csv) under {path}")
    return out
