"""Frozen-base fast path: compute base features once, then train only the head on them.

With a frozen base in eval mode the base is a fixed function, so its pooled features for a given
input never change; recomputing them every epoch (the study's Keras loop) is pure waste. Each
train image gets one eval view plus `views - 1` augmented views; each epoch draws one view per
image. A logistic-regression probe on the eval-view features is the baseline the head must beat.
Under torchrun each rank extracts its shard of the images and the shards are assembled on every
rank; rank 0 alone reads/writes the cache file and fits the probe.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from imagenette_lab.data.dataset import SplitIndex
from imagenette_lab.data.sources import make_dataset
from imagenette_lab.engine import distributed as dist
from imagenette_lab.engine.evaluate import make_loader, run_inference
from imagenette_lab.utils import atomic_write_bytes

log = logging.getLogger(__name__)

# Halves memory/disk; the features come out of a bf16/fp32 network and are small, finite values.
STORE_DTYPE = torch.float16


@dataclass
class Features:
    """Features of the items that decoded: `x` is (N, F) or (N, V, F); `indices` index the split."""

    x: Tensor
    labels: Tensor
    indices: Tensor
    n_skipped: int
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return int(self.indices.numel())

    def eval_view(self) -> Tensor:
        return (self.x[:, 0] if self.x.ndim == 3 else self.x).float()


def split_fingerprint(index: SplitIndex) -> str:
    h = hashlib.sha1()
    for s in index.samples:
        h.update(f"{s.path}|{s.label}|{s.nbytes}\n".encode())
    return h.hexdigest()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Hash of a module's weights and buffers: cached features are only valid for the same base."""
    h = hashlib.sha1()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def extract_view(
    model: torch.nn.Module,
    index: SplitIndex,
    transform: Callable,
    view: int,
    *,
    batch_size: int,
    workers: int,
    device: torch.device,
    amp: str,
    channels_last: bool,
    seed: int,
    desc: str,
    source: dict[str, Any] | None = None,
) -> Features:
    """(N', F) base features of the images that decode, sorted by index, for one view."""
    # Seeded per view: the augmented crops of view v are the same in every run, for any view count
    # (for a given number of ranks: each rank has its own stream).
    torch.manual_seed(dist.rank_seed(seed * 1000 + view))
    dataset = make_dataset(index, transform, **(source or {}))
    if hasattr(dataset, "set_epoch"):  # per-sample seeded sources (tensor cache): one seed per view
        dataset.set_epoch(view)
    loader = make_loader(dataset, batch_size, workers,
                         sampler=dist.ShardSampler(len(index)), seed=dist.rank_seed(seed * 1000 + view))
    res = run_inference(model, loader, device=device, amp=amp, channels_last=channels_last,
                        desc=f"{desc} view {view}", fn=lambda m, x: m.pooled_features(x))
    log.info("%s view %d: %d images in %.1fs (%.1f img/s)", desc, view, res.n, res.seconds, res.images_per_s)
    x, labels, indices = dist.gather_cat(res.outputs.to(STORE_DTYPE), res.labels, res.indices)
    order = torch.argsort(indices)
    return Features(x[order], labels[order], indices[order], len(index) - int(indices.numel()), res.seconds)


def stack_views(views: list[Features], n_total: int) -> Features:
    """One Features with x (N, V, F) (or (N, F) for one view) over the items present in every view."""
    common = views[0].indices
    for f in views[1:]:
        common = common[torch.isin(common, f.indices)]
    xs = [f.x[torch.isin(f.indices, common)] for f in views]
    labels = views[0].labels[torch.isin(views[0].indices, common)]
    x = torch.stack(xs, dim=1) if len(xs) > 1 else xs[0]
    return Features(x, labels, common, n_total - int(common.numel()), sum(f.seconds for f in views))


def extract(model: torch.nn.Module, index: SplitIndex, transforms: list[Callable], **kw: Any) -> Features:
    """Base features of every image under each transform (view); items must decode in every view."""
    return stack_views([extract_view(model, index, tf, v, **kw) for v, tf in enumerate(transforms)], len(index))


def save_features(path: Path, feats: Features, meta: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save({"meta": meta, "x": feats.x, "labels": feats.labels, "indices": feats.indices,
                "n_skipped": feats.n_skipped, "seconds": feats.seconds}, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def load_features(path: Path, meta: dict[str, Any]) -> Features | None:
    """Cached features if `path` holds features computed with the same `meta`, else None."""
    if not path.is_file():
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged cache is only a lost shortcut: recompute
        log.warning("ignoring unreadable feature cache %s (%s)", path, type(e).__name__)
        return None
    if d.get("meta") != meta:
        log.info("feature cache %s was computed with other settings; recomputing", path)
        return None
    log.info("reusing cached features %s", path)
    return Features(d["x"], d["labels"], d["indices"], int(d["n_skipped"]), float(d["seconds"]))


def load_or_extract(folder: Path, split: str, meta: dict[str, Any], aug_meta: Any, model: torch.nn.Module,
                    index: SplitIndex, transforms: list[Callable], **kw: Any) -> Features:
    """Each view from `<folder>/<split>_view<v>.pt` when computed with the same settings, else extracted
    (and saved on rank 0). Views are stored separately, so raising cache_views reuses the old ones.
    Under torchrun rank 0 decides and shares the cached file (other nodes need not see it)."""
    views = []
    for v, tf in enumerate(transforms):
        # View 0 is the eval view: it does not depend on the augmentation settings.
        vmeta = json.loads(json.dumps({**meta, "view": v, "augment": aug_meta if v else None}))
        path = folder / f"{split}_view{v}.pt"
        f = load_features(path, vmeta) if dist.is_main() else None
        if dist.broadcast_object(f is not None):
            f = dist.broadcast_object(f)
            f.seconds = 0.0  # reused: costs nothing in this run
        else:
            f = extract_view(model, index, tf, v, **kw)
            if dist.is_main():
                save_features(path, f, vmeta)
        views.append(f)
    return stack_views(views, len(index))


class CachedViews(Dataset):
    """(feature, label, index) items; `set_epoch` redraws which view each image shows this epoch."""

    def __init__(self, feats: Features, seed: int):
        self.feats, self.seed = feats, seed
        self.views = feats.x.shape[1] if feats.x.ndim == 3 else 1
        self.choice = torch.zeros(feats.n, dtype=torch.int64)

    def set_epoch(self, epoch: int) -> None:
        if self.views > 1:
            g = torch.Generator()
            g.manual_seed(self.seed * 7919 + epoch)
            self.choice = torch.randint(self.views, (self.feats.n,), generator=g)

    def __len__(self) -> int:
        return self.feats.n

    def __getitem__(self, i: int):
        x = self.feats.x[i, self.choice[i]] if self.views > 1 else self.feats.x[i]
        return x.float(), self.feats.labels[i], self.feats.indices[i]


def fit_probe(train: Features, val: Features, seed: int = 0) -> tuple[dict[str, Any], dict[int, int]]:
    """Logistic regression on standardised eval-view features: the linear baseline for the head.

    Returns its summary and its val predictions by item index (for a paired test against the head).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_tr, y_tr = train.eval_view().numpy(), train.labels.numpy()
    x_va, y_va = val.eval_view().numpy(), val.labels.numpy()
    if len(np.unique(y_tr)) < 2:
        return {"skipped": "fewer than two classes in the train features"}, {}
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    clf.fit(x_tr, y_tr)
    val_pred = dict(zip(val.indices.tolist(), clf.predict(x_va).tolist()))
    return {
        "model": "logistic_regression(standardised eval-view features, C=1.0)",
        "train_accuracy": float(clf.score(x_tr, y_tr)),
        "val_accuracy": float(clf.score(x_va, y_va)),
        "n_train": int(len(y_tr)),
        "n_val": int(len(y_va)),
    }, val_pred


def head_vs_probe(probe_pred: dict[int, int], indices: list[int], labels: np.ndarray, head: np.ndarray) -> dict[str, Any]:
    """Paired test of the head's val predictions against the probe's, on the items both scored."""
    from imagenette_lab.metrics import paired_comparison

    keep = [k for k, i in enumerate(indices) if i in probe_pred]
    if not keep:
        return {}
    return paired_comparison(labels[keep], head[keep], [probe_pred[indices[k]] for k in keep], names=("head", "probe"))
