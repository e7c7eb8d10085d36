"""Honest model selection: the reported checkpoint is chosen without looking at the evaluation split.

`data.holdout_frac` holds out a stratified, seeded slice of the train split; `train.select` picks:
  auto       -> best epoch on the holdout when there is one, else the last epoch;
  holdout    -> best epoch on the holdout (train.monitor computed on it);
  last       -> the last epoch;
  eval_split -> best epoch on the evaluation (val) split: explicit opt-in only, because the
                reported number is then optimistically biased; run.json records it.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from imagenette_lab.data.dataset import SplitIndex
from imagenette_lab.errors import UserError

RULES = {"holdout": "best_on_holdout", "last": "last", "eval_split": "best_on_eval_split"}
DESCRIBE = {"last": "last epoch", "best_on_holdout": "best on holdout",
            "best_on_eval_split": "best on val: selected on the reported split"}


def holdout_split(index: SplitIndex, frac: float, seed: int) -> tuple[SplitIndex, SplitIndex | None, list[int]]:
    """(fit part, holdout part or None, holdout positions in `index`): per class round(frac * n),
    at least one image of every class that has two or more, drawn with `seed`; order kept."""
    if frac <= 0:
        return index, None, []
    rng = random.Random(seed * 7907 + 11)
    held: list[int] = []
    for c in range(len(index.classes)):
        members = [i for i, s in enumerate(index.samples) if s.label == c]
        k = max(1, round(frac * len(members))) if len(members) >= 2 else 0
        held += rng.sample(members, k)
    held.sort()
    if not held:  # every class has a single image: nothing to hold out
        return index, None, []
    hs = set(held)
    fit = [s for i, s in enumerate(index.samples) if i not in hs]
    hold = [index.samples[i] for i in held]
    return (SplitIndex(index.root, index.split, index.classes, fit, list(index.skipped)),
            SplitIndex(index.root, f"{index.split} (holdout)", index.classes, hold, []), held)


def rule(select: str, holdout_frac: float) -> str:
    """The selection rule recorded in run.json for config values `train.select`/`data.holdout_frac`."""
    if select == "auto":
        select = "holdout" if holdout_frac > 0 else "last"
    if select == "holdout" and holdout_frac <= 0:
        raise UserError("train.select=holdout needs a holdout: data.holdout_frac > 0 (e.g. 0.05) and "
                        "classes with at least two train images")
    return RULES[select]


def monitor_key(selection_rule: str, monitor: str) -> str | None:
    """The history column the rule maximises (minimises for a loss); None for 'last'."""
    if selection_rule == "best_on_holdout":
        return "holdout_" + monitor.removeprefix("val_")
    if selection_rule == "best_on_eval_split":
        return monitor
    return None


def update_best(best: dict[str, Any], row: dict[str, Any], selection_rule: str,
                monitor: str) -> tuple[dict[str, Any], bool]:
    """(new best record, whether this epoch's checkpoint becomes best.pt)."""
    key = monitor_key(selection_rule, monitor)
    if key is None:  # last epoch: every epoch replaces best.pt
        return {"rule": selection_rule, "metric": None, "value": None, "epoch": row["epoch"]}, True
    value = row.get(key)
    if value is None:
        return best, False
    old = best.get("value") if best.get("metric") == key else None
    if old is None or (value < old if key.endswith("_loss") else value > old):
        return {"rule": selection_rule, "metric": key, "value": value, "epoch": row["epoch"]}, True
    return best, False


def selection_record(best: dict[str, Any], selection_rule: str, n_holdout: int) -> dict[str, Any]:
    """run.json's "selection": {rule, split, epoch, metric, value, n}."""
    split = {"best_on_holdout": "holdout", "best_on_eval_split": "val", "last": None}[selection_rule]
    return {"rule": selection_rule, "split": split, "epoch": best.get("epoch"), "metric": best.get("metric"),
            "value": best.get("value"), "n": n_holdout if split == "holdout" else None}


def split_features(feats: Any, positions: list[int]) -> tuple[Any, Any]:
    """Cached train features -> (fit part, holdout part): the holdout stays inside the train cache."""
    mask = torch.isin(feats.indices, torch.as_tensor(positions, dtype=torch.int64))
    cls = type(feats)

    def part(m: torch.Tensor) -> Any:
        return cls(feats.x[m], feats.labels[m], feats.indices[m], 0, feats.seconds)

    return part(~mask), part(mask)
