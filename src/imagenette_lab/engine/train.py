"""`train(cfg)`: the one training engine -- scratch training, frozen-base transfer, fine-tuning.

Stages: "main" (cfg.train.epochs; with a frozen base + feature_cache the head trains on cached
base features) then optionally "finetune" (cfg.train.finetune_epochs, whole network, finetune_lr).
Epochs are numbered globally across stages. Every epoch's randomness (sampler order, augmentation,
dropout, cached-view choice) is seeded from (seed, epoch), so resuming at an epoch boundary is
exact; a mid-epoch checkpoint (Ctrl-C/SIGTERM) also restores the RNG state at the last optimizer
step and skips the batches already done. Image augmentation is seeded per (seed, epoch, sample
index) (data/seeding.py), so this is exact with worker processes too.

Under torchrun every rank runs this same code (engine/distributed.py: DDP around the TrainTask of
engine/task.py, sharded data, metrics summed over ranks, files written by rank 0 only).

Run directory `<out_dir>/<name>/`: config.yaml, checkpoints/{last,best}.pt (train.checkpoints_keep),
history.csv/.jsonl, curves.png, features/ (the cache), eval/ (the selected checkpoint on val: see
engine/selection.py, chosen on a holdout slice of train or the last epoch unless train.select=eval_split),
holdout/predictions.npz, and run.json (written last).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from imagenette_lab.config import RunConfig, save_config
from imagenette_lab.data.classes import display_name
from imagenette_lab.data.dataset import index_split
from imagenette_lab.data.seeding import PerSampleSeed
from imagenette_lab.data.sources import make_dataset, source_from_config
from imagenette_lab.data.sources import prepare as prepare_source
from imagenette_lab.data.transforms import batch_mixer, eval_transform, train_transform
from imagenette_lab import tracking
from imagenette_lab.engine import distributed as dist
from imagenette_lab.engine import features as feat
from imagenette_lab.engine import selection as sel
from imagenette_lab.engine.checkpoint import (
    LAST, capture_rng, check_compatible, checkpoint_dir, find_resume_checkpoint,
    load_model_state, parse_keep, restore_rng, save_retained,
)
from imagenette_lab.engine.fast import compiled, progressive_size, reuse_freed_memory
from imagenette_lab.engine.final_eval import FinalEval
from imagenette_lab.engine.freeze import check_freeze, freeze_for_epoch
from imagenette_lab.engine.evaluate import (
    amp_dtype, make_loader, resolve_device, run_inference, skipped_paths, tta_fn,
)
from imagenette_lab.engine.loop import (
    EpochState, NonFiniteLoss, StepContext, StopRequest, head_logits,
    ignore_signals_in_worker, reduce_epoch, train_epoch, val_metrics,
)
from imagenette_lab.engine.optim import build_optimizer, build_scheduler, restore_scheduler
from imagenette_lab.engine.plan import (  # noqa: F401 - resume_config is part of this module's API
    Stage, epoch_seed, initial_weights, plan_stages, prepare_run_dir, resume_config, validate_config,
)
from imagenette_lab.engine.precision import describe as describe_precision, probe_train_amp
from imagenette_lab.engine.progress import epoch_line
from imagenette_lab.engine.task import TrainTask
from imagenette_lab import runrecord as rr
from imagenette_lab.errors import UserError
from imagenette_lab.utils import now_iso, seed_everything, write_run_json

log = logging.getLogger(__name__)


class Trainer(FinalEval):
    """Holds one run's model, data and progress; `train()` drives it stage by stage."""

    def __init__(self, cfg: RunConfig, run_dir: Path, ckpt: dict[str, Any] | None,
                 stop: StopRequest, hooks: dict[str, Callable] | None):
        self.cfg, self.run_dir, self.stop, self.hooks = cfg, run_dir, stop, hooks or {}
        self.device = dist.local_device(resolve_device(cfg.train.device))
        if self.device.type == "cpu":
            reuse_freed_memory()  # no page faults per step: engine/fast.py
        d = cfg.data
        # full_train_index: what the feature cache covers; train_index: what the weights are fit on.
        self.full_train_index = index_split(d.root, d.train_split).subset(d.limit_per_class, cfg.seed)
        self.train_index, self.holdout_index, self.holdout_pos = sel.holdout_split(
            self.full_train_index, d.holdout_frac, cfg.seed)
        self.rule = sel.rule(cfg.train.select, d.holdout_frac if self.holdout_index is not None else 0.0)
        if len(self.train_index) < dist.world_size():
            raise UserError(f"{dist.world_size()} processes but only {len(self.train_index)} training images: "
                            "use fewer processes (--nproc_per_node) or more data")
        self.val_index = index_split(d.root, d.val_split, classes=self.train_index.classes).subset(
            d.val_limit_per_class, cfg.seed)
        self.classes = list(self.train_index.classes)
        self.class_names = [display_name(c) for c in self.classes]
        m = cfg.model
        if ckpt is not None:
            check_compatible(ckpt, model_name=m.name, head=m.head, classes=self.classes,
                             source=f"checkpoint in {run_dir}")
        from imagenette_lab.models.factory import create_classifier, data_config

        seed_everything(cfg.seed)
        fresh = ckpt is None  # on resume the weights come from the checkpoint: skip loading ImageNet's
        tag = initial_weights(m) if fresh else None
        self.model = create_classifier(
            m.name, len(self.classes), pretrained=tag is not None, weights=tag,
            weights_file=m.weights_file if fresh else None, freeze_base=m.freeze_base,
            head=m.head, dropout=m.dropout, drop_path=m.drop_path,
            zero_init_last=m.zero_init_last)
        check_freeze(self.model, cfg.train.freeze_modules)
        if ckpt is not None:
            load_model_state(self.model, ckpt["model"], f"checkpoint in {run_dir}")
            self.data_cfg = dict(ckpt["data_cfg"])
        else:
            self.data_cfg = dict(data_config(self.model, m.name, (m.weights or "DEFAULT") if m.pretrained else None))
            self.data_cfg.update(input_size=(3, d.eval_px, d.eval_px), crop_pct=d.eval_crop_pct)
        # In the checkpoint's data_cfg, so evaluate/predict score the same way; a resume may change it.
        self.data_cfg.pop("tta", None)
        if d.tta != "none":
            self.data_cfg["tta"] = d.tta
        self.source = source_from_config(d, cfg.seed, self.data_cfg.get("interpolation", "bilinear"))
        if dist.is_main():  # tensor caches (data.cache) are built once, by rank 0, before training
            prepare_source([self.full_train_index, self.val_index], **self.source)  # covers the holdout
        dist.barrier()
        self.arch = {"name": m.name, "num_classes": len(self.classes), "head": m.head,
                     "dropout": m.dropout, "freeze_base": m.freeze_base}
        self.ckpt = ckpt
        # The precision image training runs in: chosen once (timed on this model where that matters)
        # and kept in the checkpoint, so a resumed run computes exactly as the interrupted one did.
        self.train_amp: str | None = ckpt.get("train_amp") if ckpt else None
        self._amp_logged = False
        self.history: list[dict[str, Any]] = list(ckpt["history"]) if ckpt else []
        self.epoch = int(ckpt["epoch"]) if ckpt else 0
        self.best: dict[str, Any] = dict(ckpt["best"]) if ckpt else {
            "rule": self.rule, "metric": sel.monitor_key(self.rule, cfg.train.monitor), "value": None, "epoch": None}
        self.probe: dict[str, Any] | None = ckpt.get("probe") if ckpt else None
        self.probe_pred: dict[int, int] = dict(ckpt.get("probe_pred") or {}) if ckpt else {}
        self.skipped: dict[str, str] = {s.path: s.reason for s in self.train_index.skipped + self.val_index.skipped}
        if ckpt:
            self.skipped.update({p: r for p, r in ckpt.get("skipped", [])})
        self.current: tuple[Stage, StepContext] | None = None
        self.features_seconds = 0.0
        self.recalibrated: dict[str, Any] | None = None  # train.recalibrate_bn, done by final_eval
        self._cache: tuple[feat.Features, feat.Features] | None = None
        self._holdout_feats: feat.Features | None = None

    # ------------------------------------------------------------------ checkpoints
    def state(self, stage: Stage, ctx: StepContext, *, step: int = 0, partial: dict | None = None,
              rng: dict | None = None, interrupted: bool = False, ranks: list | None = None) -> dict[str, Any]:
        return {
            "world_size": dist.world_size(), "rank_boundaries": ranks,
            "arch": self.arch, "model": self.model.state_dict(),
            "optimizer": ctx.optimizer.state_dict(), "scheduler": ctx.scheduler.state_dict(),
            "scaler": ctx.scaler.state_dict(), "stage": stage.name, "epoch": self.epoch,
            "step": step, "partial": partial or {}, "rng": rng or capture_rng(), "best": self.best,
            "config": self.cfg.to_dict(), "classes": self.classes, "class_names": self.class_names,
            "data_cfg": self.data_cfg, "history": self.history, "probe": self.probe,
            "probe_pred": self.probe_pred,
            "skipped": [[p, r] for p, r in sorted(self.skipped.items())],
            "interrupted": interrupted, "saved": now_iso(), "train_amp": self.train_amp,
        }

    def save(self, stage: Stage, ctx: StepContext, best: bool = False, **kw: Any) -> Path:
        cdir = checkpoint_dir(self.run_dir)
        if dist.is_main():
            save_retained(self.state(stage, ctx, **kw), cdir, parse_keep(self.cfg.train.checkpoints_keep),
                          best=best, epoch=None if kw.get("step") else self.epoch)
        dist.barrier()
        return cdir / LAST

    def save_interrupt(self) -> Path | None:
        """Checkpoint at the last consistent step of the epoch in progress (None if there is none)."""
        if self.current is None:
            return None
        stage, ctx = self.current
        if ctx.in_update or ctx.boundary is None:
            log.warning("interrupted inside an optimizer step: keeping the last epoch checkpoint")
            return None
        b = ctx.boundary
        ranks = dist.all_gather_object(b) if dist.world_size() > 1 else None
        return self.save(stage, ctx, step=b["state"]["step"], partial=b["state"], rng=b["rng"],
                         interrupted=True, ranks=ranks)

    # ------------------------------------------------------------------ history
    def write_history(self, plot: bool = False) -> None:
        if dist.is_main() and self.history:
            tracking.write_history(self.run_dir, self.history, self.cfg.train.loggers,
                                   plot_title=self.cfg.name if plot else None)

    # ------------------------------------------------------------------ feature cache
    def features(self) -> tuple[feat.Features, feat.Features]:
        if self._cache is not None:
            return self._cache
        cfg, dc = self.cfg, self.data_cfg
        views = [eval_transform(dc)] + [self.train_tf()] * (cfg.train.cache_views - 1)
        meta = {"model": cfg.model.name, "data_cfg": dc, "amp": cfg.train.amp, "seed": cfg.seed,
                "base": feat.weights_fingerprint(self.model.base)}
        aug = [cfg.data.augment, cfg.data.min_scale, cfg.data.random_erasing]
        if cfg.data.eval_px != cfg.data.img_size:  # augmented views are cropped at img_size, not dc's eval size
            aug.append(cfg.data.img_size)
        if dist.is_main():  # inference only: bf16 wherever the CPU has it natively (no timing probe)
            log.info("%s, for the base features", describe_precision(
                self.device, cfg.train.amp, amp_dtype(self.device, cfg.train.amp), cfg.model.channels_last))
        out = []
        for split, index, tfs in (("train", self.full_train_index, views), ("val", self.val_index, views[:1])):
            f = feat.load_or_extract(
                self.run_dir / rr.FEATURES, split, {**meta, "split": feat.split_fingerprint(index)}, aug,
                self.model, index, tfs, batch_size=cfg.data.batch_size, workers=cfg.data.workers,
                device=self.device, amp=cfg.train.amp, channels_last=cfg.model.channels_last, seed=cfg.seed,
                desc=f"features {split}", source=self.source)
            self.features_seconds += f.seconds
            for p in skipped_paths(index, f):
                self.skipped.setdefault(p, "could not be decoded")
            out.append(f)
        fit, self._holdout_feats = sel.split_features(out[0], self.holdout_pos)
        self._cache = (fit, out[1])
        if self.probe is None and dist.is_main():
            t0 = time.perf_counter()
            self.probe, self.probe_pred = feat.fit_probe(fit, out[1], cfg.seed)  # same images as the head
            self.probe["seconds"] = round(time.perf_counter() - t0, 2)
            log.info("logistic-regression probe on cached features: val accuracy %.4f",
                     self.probe.get("val_accuracy", float("nan")))
        return self._cache

    # ------------------------------------------------------------------ stages
    def run_stage(self, stage: Stage) -> None:
        if self.epoch >= stage.last:
            return
        cfg, model, device = self.cfg, self.model, self.device
        if stage.name == "finetune":
            model.unfreeze()
        if cfg.train.sync_bn:
            self.model = model = dist.convert_sync_batchnorm(model, device)
        model.to(device)
        if stage.cached:
            train_feats, _ = self.features()
            dataset: Any = feat.CachedViews(train_feats, cfg.seed)
            amp, channels_last, mixer = "off", False, None
            workers = 0
        else:
            tf = self.train_tf()
            # Augmentation seeded per (seed, epoch, index): exact resume with worker processes
            # (the cache source seeds its batched crops itself).
            dataset = make_dataset(self.train_index, tf, **self.source)
            if self.source["source"] == "folder":
                dataset = PerSampleSeed(dataset, cfg.seed)
            amp, channels_last = self.resolve_train_amp(), cfg.model.channels_last
            mixer = batch_mixer(len(self.classes), cfg.data.mixup, cfg.data.cutmix)
            workers = cfg.data.workers
            if channels_last:
                model.to(memory_format=torch.channels_last)
        # One module for DDP in both stages (the cached stage included): see engine/task.py.
        net = compiled(model, cfg.train.compile and not stage.cached)  # shares model's parameters
        task = dist.wrap(TrainTask(net, cached=stage.cached, amp=amp, device=device,
                                   label_smoothing=cfg.optim.label_smoothing), device)
        sampler = dist.make_sampler(dataset, shuffle=True, seed=cfg.seed)
        loader = make_loader(dataset, cfg.data.batch_size, workers, sampler=sampler, seed=cfg.seed)
        loader.worker_init_fn = ignore_signals_in_worker
        steps = math.ceil(len(loader) / cfg.optim.grad_accum)
        optimizer = build_optimizer(model, cfg.optim, stage.lr)
        scheduler = build_scheduler(optimizer, cfg.optim, stage.lr, stage.epochs, steps)
        fp16 = device.type == "cuda" and amp_dtype(device, amp) == torch.float16
        scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        partial, rng = None, None
        ck = self.ckpt
        if ck is not None and ck["stage"] == stage.name:  # resuming inside this stage
            fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
            optimizer.load_state_dict(ck["optimizer"])
            scaler.load_state_dict(ck["scaler"])
            old = ck["config"]["train"]
            restore_scheduler(scheduler, ck["scheduler"], fresh, stage.name,
                              old["epochs"] if stage.name == "main" else old["finetune_epochs"], stage.epochs)
            if ck.get("step"):
                own = dist.rank_boundary(ck)  # this rank's own sums and RNG when saved under DDP
                partial, rng = EpochState.from_dict(own["state"]), own["rng"]
            self.ckpt = None
        ctx = StepContext(
            model, optimizer, scheduler, scaler, device, task, amp=amp, channels_last=channels_last,
            mixer=mixer, label_smoothing=cfg.optim.label_smoothing, grad_accum=cfg.optim.grad_accum,
            grad_clip=cfg.optim.grad_clip, on_step_end=self.hooks.get("on_step_end"),
            log_every=cfg.train.log_every)
        for epoch in range(max(stage.first, self.epoch + 1), stage.last + 1):
            self.run_epoch(stage, ctx, epoch, loader, sampler, dataset, partial, rng)
            partial = rng = None

    def resolve_train_amp(self) -> str:
        """`train.amp` for image training; on a CPU `auto` becomes bf16 or off, timed once on rank 0."""
        cfg, reason, first = self.cfg, "the choice recorded in the checkpoint", not self._amp_logged
        if cfg.train.amp != "auto" or self.device.type != "cpu":
            self.train_amp = cfg.train.amp
        elif self.train_amp is None:
            if dist.is_main():
                shape = (cfg.data.batch_size, 3, cfg.data.img_size, cfg.data.img_size)  # as trained
                self.train_amp, reason = probe_train_amp(self.model, cfg.model.name, shape, cfg.model.channels_last)
            self.train_amp = dist.broadcast_object(self.train_amp)  # every rank computes alike
        if first and dist.is_main():
            log.info(describe_precision(self.device, cfg.train.amp, amp_dtype(self.device, self.train_amp),
                                        cfg.model.channels_last, reason))
        self._amp_logged = True
        return self.train_amp

    def run_epoch(self, stage: Stage, ctx: StepContext, epoch: int, loader: Any, sampler: Any,
                  dataset: Any, partial: EpochState | None, rng: dict | None) -> None:
        # Signals wait for the epoch's end (see engine/loop.py): validation and the checkpoint and
        # history writes finish, so a Ctrl-C cannot break them half-way (or a first-time import in them).
        with self.stop.deferring():
            cfg = self.cfg
            t0 = time.perf_counter()
            seed_everything(dist.rank_seed(epoch_seed(cfg.seed, epoch)))  # augmentations differ per rank
            loader.generator.manual_seed(dist.rank_seed(epoch_seed(cfg.seed, epoch)))
            state = partial or EpochState()
            sampler.set_epoch(epoch, skip=state.step * cfg.data.batch_size)
            dataset.set_epoch(epoch)
            self._resize_for_epoch(stage, dataset, epoch)
            if stage.name == "main" and freeze_for_epoch(self.model, cfg.train.freeze_modules,
                                                         cfg.train.freeze_last_epochs, epoch, stage.epochs):
                log.info("epoch %d: %s frozen (train.freeze_modules)", epoch, ", ".join(cfg.train.freeze_modules))
                ctx.task = dist.rewrap(ctx.task, self.device)
            if rng is not None:
                restore_rng(rng)
            self.current = (stage, ctx)
            total = self.cfg.train.epochs + self.cfg.train.finetune_epochs
            state = train_epoch(ctx, loader, state, self.stop, epoch=epoch, desc=f"epoch {epoch}/{total} {stage.name}")
            row: dict[str, Any] = {"epoch": epoch, "stage": stage.name,
                                   "lr": ctx.optimizer.param_groups[0]["lr"], **reduce_epoch(state)}
            if not stage.cached:
                sampler.set_epoch(epoch)
                for i in set(sampler.order()) - state.seen:
                    self.skipped.setdefault(str(self.train_index.samples[i].path), "could not be decoded")
                if dist.world_size() > 1:  # rank 0 saves the list: it needs every rank's finds
                    for other in dist.all_gather_object(self.skipped):
                        self.skipped.update(other)
            if epoch % cfg.train.eval_every == 0 or epoch == stage.last:
                row.update(self.validate(stage))
                if self.holdout_index is not None:
                    row.update(self.validate(stage, holdout=True))
            else:
                row.update(val_loss=None, val_acc=None, val_f1=None)
            row["seconds"] = round(time.perf_counter() - t0, 3)
            row["images_per_s"] = round(row["train_n"] / state.seconds, 2) if state.seconds > 0 else None
            # From here on the epoch is complete: an interrupt keeps last.pt (old or new, both whole).
            self.current = None
            self.history.append(row)
            self.epoch = epoch
            improved = self._update_best(row)
            self.save(stage, ctx, best=improved)
            self.write_history()
            self._log_epoch(row, total)
            if self.hooks.get("on_epoch_end"):
                self.hooks["on_epoch_end"](row)
        self.stop.check()

    def train_tf(self, size: int = 0) -> Any:
        """The train augmentation at `size` px (default data.img_size; data_cfg's size is the eval size)."""
        d = self.cfg.data
        size = size or d.img_size
        return train_transform({**self.data_cfg, "input_size": (3, size, size)}, d.augment, d.min_scale,
                               d.random_erasing)

    def _resize_for_epoch(self, stage: Stage, dataset: Any, epoch: int) -> None:
        """Progressive resizing (data.progressive_min_size): this epoch's train crop size."""
        d = self.cfg.data
        if stage.cached or not d.progressive_min_size or stage.name != "main":
            return
        size = progressive_size(d.img_size, d.progressive_min_size, d.progressive_frac, epoch - stage.first + 1,
                                stage.epochs)
        inner = getattr(dataset, "dataset", dataset)  # PerSampleSeed wraps the folder source
        inner.transform = self.train_tf(size)
        log.info("epoch %d: training at %d px (progressive resizing)", epoch, size)

    def validate(self, stage: Stage, holdout: bool = False) -> dict[str, Any]:
        """val_* metrics on the val split, or holdout_* on the holdout slice of train."""
        if stage.cached:
            _, val = self.features()
            f = self._holdout_feats if holdout else val
            # Each rank scores its own rows; val_metrics sums the confusion matrices over ranks.
            logits, labels = head_logits(self.model, dist.shard(f.eval_view())), dist.shard(f.labels)
        else:
            ds = make_dataset(self.holdout_index if holdout else self.val_index, eval_transform(self.data_cfg),
                              **self.source)
            sampler = dist.ShardSampler(len(ds))  # no padding: every val image counted exactly once
            loader = make_loader(ds, self.cfg.data.batch_size, self.cfg.data.workers, sampler=sampler)
            res = run_inference(self.model, loader, device=self.device, amp=self.cfg.train.amp,
                                channels_last=self.cfg.model.channels_last, desc="holdout" if holdout else "val",
                                fn=tta_fn(self.data_cfg.get("tta")))
            logits, labels = res.outputs, res.labels
        m = val_metrics(logits, labels, len(self.classes))
        return {k.replace("val_", "holdout_"): v for k, v in m.items()} if holdout else m

    def _update_best(self, row: dict[str, Any]) -> bool:
        self.best, improved = sel.update_best(self.best, row, self.rule, self.cfg.train.monitor)
        return improved

    def _log_epoch(self, row: dict[str, Any], total: int) -> None:
        if dist.is_main():
            log.info(epoch_line(row, total, self.history))


@dist.launched  # under torchrun: join the process group, check configs match, leave it at the end
def train(cfg: RunConfig, *, resume: str | Path | None = None, overwrite: bool = False,
          hooks: dict[str, Callable] | None = None) -> dict[str, Any]:
    """Train per `cfg`; returns run.json's content (+ run_dir), or status "interrupted" + exit_code.

    resume: a run directory to continue from its last checkpoint (`cfg` must describe the same
    model and classes; use `resume_config` to get the run's own config). overwrite: replace a
    run already in the run directory (default: refuse with a message). hooks: optional
    callbacks {"on_step_end": f(info), "on_epoch_end": f(row)} (tests, progress reporting).
    """
    started = time.time()
    validate_config(cfg)
    ckpt = None
    if resume is not None:
        ckpt_path, ckpt = find_resume_checkpoint(resume)
        log.info("resuming %s from %s (epoch %d, step %d)", resume, ckpt_path, ckpt["epoch"], ckpt.get("step", 0))
    run_dir = prepare_run_dir(cfg, resume, overwrite)
    if dist.is_main():
        save_config(cfg, run_dir / rr.CONFIG)
    with StopRequest() as stop:
        trainer = Trainer(cfg, run_dir, ckpt, stop, hooks)
        tracker = tracking.start(cfg, run_dir, resumed=resume is not None, main=dist.is_main())
        trainer.hooks = tracker.hooks(trainer.hooks)  # TensorBoard / MLflow get every epoch row
        try:
            for stage in plan_stages(cfg):
                trainer.run_stage(stage)
            trainer.write_history(plot=True)
            metrics = trainer.final_eval() if dist.is_main() else {}
        except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM (Interrupted) or a raw KeyboardInterrupt
            signum = getattr(e, "signum", 2)
            path = trainer.save_interrupt()
            trainer.write_history(plot=True)
            if dist.is_main():
                log.warning("interrupted: %s; continue with --resume %s",
                            f"saved {path}" if path else "no new checkpoint", run_dir)
            tracker.finish("KILLED", {"epochs_run": trainer.epoch})
            return {"status": "interrupted", "exit_code": 128 + int(signum), "run_dir": str(run_dir),
                    "checkpoint": str(path) if path else None, "epoch": trainer.epoch}
        except NonFiniteLoss as e:
            trainer.write_history(plot=True)
            tracker.finish("FAILED", {"epochs_run": trainer.epoch})
            last = checkpoint_dir(run_dir) / LAST
            kept = f"the last good checkpoint is {last} (epoch {trainer.epoch})" if last.exists() else "no checkpoint was saved"
            raise UserError(f"{e}: training stopped; {kept}. Lower optim.lr, set optim.grad_clip, "
                            "or use train.amp=off") from None
    extra = {"run_dir": str(run_dir), "resumed": resume is not None, **trainer.run_summary(metrics)}
    meta = write_run_json(run_dir, "train", cfg.name, started, **extra) if dist.is_main() else extra
    tracker.finish("FINISHED", meta)
    return {**meta, "status": "complete", "exit_code": 0, "rank": dist.rank()}
