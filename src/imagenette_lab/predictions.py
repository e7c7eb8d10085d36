"""`Predictions`: one batched inference, kept as logits, from which every number is recomputed.

In the spirit of fastai's `ClassificationInterpretation`: training's final evaluation, zero-shot,
`evaluate` and `predict` all call `infer()` (the fast path: bf16 autocast on CPU, channels_last,
worker processes) and get the same object back. It keeps the logits, so calibration, confidence
intervals or a new metric never need the model again; `save(dir)` writes the evaluation bundle
(predictions.npz beside predictions.csv, metrics.json with "ci", reports, plots) and
`Predictions.load(dir)` reads it back exactly.

An ImageNet-1k head scored on C dataset classes keeps all K=1000 logits plus `columns` (the logit
column of each class): its argmax outside those columns is OTHER (an error, never a false positive).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from imagenette_lab.data.dataset import ImageFolder
from imagenette_lab.errors import UserError

log = logging.getLogger(__name__)

FILE = "predictions.npz"
FORMAT = "imagenette-lab/predictions/1"


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Predictions:
    logits: np.ndarray  # float32 (N, K)
    targets: np.ndarray  # int64 (N,); -1 = unlabelled (predict on loose files)
    indices: np.ndarray  # int64 (N,) dataset indices of the items that decoded
    paths: list[str]
    class_names: list[str]
    columns: np.ndarray | None = None  # int64 (C,) logit column per class when K != C
    fingerprint: dict[str, str] = field(default_factory=dict)  # {"model", "data"} sha1s
    meta: dict[str, Any] = field(default_factory=dict)  # split, source, seconds, images_per_s, skipped
    name: str = ""

    def __post_init__(self) -> None:
        self.logits = np.ascontiguousarray(self.logits, dtype=np.float32)
        self.targets = np.asarray(self.targets, dtype=np.int64)
        self.indices = np.asarray(self.indices, dtype=np.int64)
        self.paths = [str(p) for p in self.paths]
        self.class_names = [str(c) for c in self.class_names]
        if self.columns is not None:
            self.columns = np.asarray(self.columns, dtype=np.int64)
        n, c = len(self.targets), len(self.class_names)
        k = self.logits.shape[1] if self.logits.ndim == 2 else -1
        if self.logits.shape[0] != n or len(self.indices) != n or len(self.paths) != n:
            raise ValueError(f"logits {self.logits.shape}, {n} targets, {len(self.indices)} indices and "
                             f"{len(self.paths)} paths must describe the same items")
        want = c if self.columns is None else None
        if want is not None and k != want:
            raise UserError(f"the model outputs {k} scores per image but there are {c} class names")
        if self.columns is not None and (len(self.columns) != c or (self.columns >= k).any()):
            raise UserError(f"class columns {len(self.columns)} do not fit {c} classes / {k} logits")
        if n and (self.targets.max() >= c or self.targets.min() < -1):
            raise UserError(f"targets must be class indices 0..{c - 1} (or -1 for unlabelled)")

    # ------------------------------------------------------------------ derived values
    @property
    def n(self) -> int:
        return len(self.targets)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def probs(self) -> np.ndarray:
        """(N, C) float64: softmax over all K logits, at each class's column (sums to < 1 with columns)."""
        p = _softmax(self.logits)
        return p if self.columns is None else p[:, self.columns]

    def predicted(self) -> np.ndarray:
        """(N,) class index of the argmax, or OTHER (-1) when the argmax is outside the classes."""
        top = self.logits.argmax(axis=1)
        if self.columns is None:
            return top.astype(np.int64)
        back = np.full(self.logits.shape[1], -1, dtype=np.int64)
        back[self.columns] = np.arange(len(self.columns))
        return back[top]

    def confidence(self) -> np.ndarray:
        """(N,) probability of the top-1 output (over all K logits)."""
        return _softmax(self.logits).max(axis=1)

    def restrict(self) -> "Predictions":
        """The C-way classifier: argmax over the classes' own logits only (zero-shot 'restricted')."""
        if self.columns is None:
            return self
        return replace(self, logits=self.logits[:, self.columns], columns=None)

    def subset(self, keep: np.ndarray) -> "Predictions":
        keep = np.asarray(keep)
        return replace(self, logits=self.logits[keep], targets=self.targets[keep], indices=self.indices[keep],
                       paths=[self.paths[i] for i in np.arange(self.n)[keep]])

    def sorted_by_path(self) -> "Predictions":
        return self.subset(np.argsort(np.asarray(self.paths, dtype=object), kind="stable"))

    def _labelled(self) -> None:
        if self.n == 0:
            raise UserError("no predictions to score (no image decoded)")
        if (self.targets < 0).any():
            raise UserError("these predictions have no true labels (files outside a class folder)")

    def check_classes(self, classes: Sequence[str], what: str = "the dataset") -> None:
        """Refuse (no silent remapping) when `classes` is not exactly this class list, in this order."""
        ours, theirs = self.class_names, [str(c) for c in classes]
        if ours != theirs:
            missing = [c for c in theirs if c not in ours]
            extra = [c for c in ours if c not in theirs]
            parts = ([f"only in {what}: {', '.join(missing[:5])}"] if missing else []) + (
                [f"only in the predictions: {', '.join(extra[:5])}"] if extra else [])
            detail = "; ".join(parts) or "same classes, other order"
            raise UserError(f"the predictions' {len(ours)} classes differ from {what}'s {len(theirs)} ({detail})")

    # ------------------------------------------------------------------ metrics
    def metrics(self, ci: bool = True, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
        """compute_metrics() plus, with `ci`, the stratified bootstrap intervals under "ci"."""
        from imagenette_lab.metrics import compute_metrics

        self._labelled()
        pred = self.predicted()
        out = compute_metrics(self.targets, pred, self.class_names, probs=self.probs())
        if self.columns is not None:
            # Top-5 among all K outputs (ImageNet top-5), not among the C class columns.
            top5 = np.argsort(-self.logits, axis=1, kind="stable")[:, :5]
            out["top5_accuracy"] = float((top5 == self.columns[self.targets][:, None]).any(axis=1).mean())
        if ci:
            from imagenette_lab.stats import bootstrap_ci

            out["ci"] = bootstrap_ci(self.targets, pred, self.class_names, n_boot=n_boot, seed=seed)
        return out

    def confusion(self) -> np.ndarray:
        """Counts (rows true, columns predicted; an extra 'other' column when any OTHER)."""
        from imagenette_lab.metrics import confusion

        self._labelled()
        return confusion(self.targets, self.predicted(), self.num_classes)

    def top_losses(self, k: int = 16, mistakes_only: bool = False) -> pd.DataFrame:
        """The k items with the largest -log p(true class): path, true, predicted, confidence, loss."""
        from imagenette_lab.metrics import OTHER, other_name, true_class_loss

        self._labelled()
        pred, probs = self.predicted(), self.probs()
        named = np.array(self.class_names + [other_name(self.class_names)], dtype=object)
        conf = np.where(pred == OTHER, self.confidence(), probs[np.arange(self.n), np.maximum(pred, 0)])
        frame = pd.DataFrame({"path": self.paths, "index": self.indices, "true": named[self.targets],
                              "predicted": named[pred], "confidence": conf,
                              "loss": true_class_loss(self.targets, probs), "correct": pred == self.targets})
        if mistakes_only:
            frame = frame[~frame["correct"]]
        return frame.sort_values("loss", ascending=False, kind="stable").head(k).reset_index(drop=True)

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | Path, *, title: str = "", gallery_n: int = 16, ci: bool = True,
             extra_columns: Mapping[str, Sequence[Any]] | None = None, n_boot: int = 1000) -> dict[str, Any]:
        """Write predictions.npz and the evaluation bundle (metrics.json with "ci", reports, plots)."""
        from imagenette_lab.metrics import save_evaluation
        from imagenette_lab.utils import atomic_write_bytes

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / FILE, self.to_bytes())
        m = self.metrics(ci=ci, n_boot=n_boot)
        keep = {k: m[k] for k in ("ci", "top5_accuracy") if k in m}
        keep["fingerprint"] = self.fingerprint
        confidence = self.confidence() if self.columns is not None else None
        written = save_evaluation(out, self.targets, self.predicted(), self.class_names, probs=self.probs(),
                                  paths=self.paths, title=title, gallery_n=gallery_n, confidence=confidence,
                                  extra_columns=extra_columns, extra=keep)
        return written

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        header = {"format": FORMAT, "fingerprint": self.fingerprint, "meta": self.meta, "name": self.name}
        arrays = dict(logits=self.logits, targets=self.targets, indices=self.indices,
                      paths=np.array(self.paths, dtype=np.str_), class_names=np.array(self.class_names, dtype=np.str_),
                      header=np.array(json.dumps(header, default=str)))
        if self.columns is not None:
            arrays["columns"] = self.columns
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def load(cls, path: str | Path) -> "Predictions":
        """From an eval dir (its predictions.npz) or the .npz file itself."""
        p = Path(path)
        f = p / FILE if p.is_dir() else p
        if not f.is_file():
            raise UserError(f"{f} does not exist (no saved predictions; rerun the evaluation)")
        try:
            with np.load(f, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                if header.get("format") != FORMAT:
                    raise UserError(f"{f} is not an imagenette-lab predictions file")
                return cls(z["logits"], z["targets"], z["indices"], [str(x) for x in z["paths"]],
                           [str(x) for x in z["class_names"]], z["columns"] if "columns" in z.files else None,
                           header.get("fingerprint", {}), header.get("meta", {}), header.get("name", ""))
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{f} is unreadable ({type(e).__name__}: {str(e)[:120]})") from None


# ----------------------------------------------------------------------------- inference
def data_fingerprint(paths: Sequence[str], targets: np.ndarray, preprocess: str) -> str:
    h = hashlib.sha1(preprocess.encode())
    for p, t in zip(paths, targets.tolist()):
        h.update(f"{p}|{t}\n".encode())
    return h.hexdigest()


def infer(
    model: Any,
    index: Any,
    transform: Callable,
    class_names: Sequence[str],
    *,
    columns: Sequence[int] | None = None,
    batch_size: int = 64,
    workers: int = 2,
    device: Any = "auto",
    amp: str = "auto",
    channels_last: bool = True,
    draft: int | None = None,
    desc: str = "eval",
    name: str = "",
    meta: dict[str, Any] | None = None,
    skip_errors: bool = False,
    source: dict[str, Any] | None = None,
    tta: str = "none",
) -> Predictions:
    """Score every image of `index` (a SplitIndex) with `model` on the fast path; sorted by index.

    Items that fail to decode (or, with `skip_errors`, to preprocess) are missing from the result
    and listed in meta["skipped"]. `tta="flip"` averages each image's logits with its mirror's.
    """
    from imagenette_lab.engine.evaluate import make_loader, run_inference, tta_fn
    from imagenette_lab.engine.features import weights_fingerprint

    from imagenette_lab.data.sources import make_dataset

    # Loose files (predict) go through the tolerant folder; everything else through the source factory.
    folder = (TolerantFolder(index, transform, draft=draft) if skip_errors
              else make_dataset(index, transform, draft=draft, **(source or {})))
    loader = make_loader(folder, batch_size, _workers(workers, len(index), batch_size))
    fn = tta_fn(tta)
    res = run_inference(model, loader, device=device, amp=amp, channels_last=channels_last, desc=desc, fn=fn)
    order = np.argsort(res.indices.numpy(), kind="stable")
    indices = res.indices.numpy()[order]
    targets = res.labels.numpy()[order]
    logits = res.outputs.numpy()[order] if res.n else np.zeros((0, len(columns or class_names)), np.float32)
    paths = [str(index.samples[i].path) for i in indices]
    arrived = set(indices.tolist())
    skipped = [str(s.path) for i, s in enumerate(index.samples) if i not in arrived]
    preprocess = repr(transform) + ("" if fn is None else f" + tta={tta}")
    info = {"split": getattr(index, "split", ""), "seconds": round(res.seconds, 3),
            "images_per_s": round(res.images_per_s, 2), "n_skipped": len(skipped), "skipped": skipped,
            "amp": amp, "channels_last": channels_last, "batch_size": batch_size, "tta": tta if fn else "none",
            **(meta or {})}
    fp = {"model": weights_fingerprint(model), "data": data_fingerprint(paths, targets, preprocess)}
    if logits.ndim != 2:
        raise UserError(f"the model outputs {tuple(logits.shape[1:])} per image, not one score per class")
    if columns is not None and len(logits) and logits.shape[1] <= max(columns):
        raise UserError(f"the model outputs {logits.shape[1]} scores per image; the classes need output "
                        f"columns up to {max(columns)} (an ImageNet-1k head?)")
    return Predictions(logits, targets, indices, paths, list(class_names),
                       None if columns is None else np.asarray(columns), fp, info, name)


def _workers(workers: int, n: int, batch_size: int) -> int:
    # More workers than batches (or any for a single batch) only costs process start-up.
    batches = -(-n // max(batch_size, 1))
    return 0 if batches <= 1 else min(workers, batches)



class TolerantFolder(ImageFolder):
    """Loose files (predict): one the transform cannot handle (a 1x1 image) is skipped, not fatal."""

    def __getitem__(self, i: int):
        try:
            return super().__getitem__(i)
        except Exception as e:  # noqa: BLE001 - reported as skipped by the caller
            log.warning("skipping %s (cannot preprocess: %s)", self.index.samples[i].path, e)
            return None
