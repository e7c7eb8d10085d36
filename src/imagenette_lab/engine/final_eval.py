"""The end of a training run: the selected checkpoint scored on val (-> <run>/eval/) and on the holdout
slice (-> <run>/holdout/), calibration, Grad-CAM, the head-vs-probe paired test, and run.json's fields.

A mixin of `engine.train.Trainer` (it reads the trainer's model, indexes and selection state), kept
apart so train.py reads in one sitting.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from imagenette_lab import runrecord as rr
from imagenette_lab.data.transforms import eval_transform
from imagenette_lab.engine import features as feat
from imagenette_lab.engine import selection as sel
from imagenette_lab.engine.checkpoint import (
    BEST, LAST, checkpoint_dir, load_checkpoint, load_model_state, save_checkpoint,
)
from imagenette_lab.engine.plan import plan_stages
from imagenette_lab.engine.recalibrate import recalibrate_bn

log = logging.getLogger("imagenette_lab.engine.train")  # one logger for the whole run's lines


class FinalEval:
    def final_eval(self) -> dict[str, Any]:
        """The selected checkpoint, as `evaluate`/`predict` rebuild it, on the val images -> <run>/eval/;
        the holdout slice scored with it -> <run>/holdout/ (for calibration)."""
        from imagenette_lab.calibration import HOLDOUT_DIR
        from imagenette_lab.diagnostics import diagnose_eval
        from imagenette_lab.predictions import infer

        cdir = checkpoint_dir(self.run_dir)
        path = cdir / BEST if (cdir / BEST).is_file() else cdir / LAST
        ckpt = load_checkpoint(path)
        load_model_state(self.model, ckpt["model"], str(path))
        if path.name == LAST and self.rule != "last":  # best.pt not kept: say what is really reported
            log.warning("no checkpoints/best.pt (train.checkpoints_keep): reporting the last epoch")
            self.rule, self.best = "last", {"rule": "last", "metric": None, "value": None, "epoch": ckpt["epoch"]}
        c, b = self.cfg, self.best
        if c.train.recalibrate_bn:
            self.recalibrated = self._recalibrate(ckpt, path)
        kw = dict(batch_size=c.data.batch_size, workers=c.data.workers, device=self.device, amp=c.train.amp,
                  channels_last=c.model.channels_last, name=c.name, tta=self.data_cfg.get("tta", "none"))
        info = {"checkpoint": str(path), "selection": sel.selection_record(b, self.rule, len(self.holdout_pos))}
        preds = infer(self.model, self.val_index, eval_transform(self.data_cfg), self.class_names,
                      desc="eval", meta=info, **kw)
        for p in preds.meta["skipped"]:
            self.skipped.setdefault(p, "could not be decoded")
        metrics = preds.save(self.run_dir / rr.EVAL, title=f"{c.name} (epoch {b['epoch']}, {sel.DESCRIBE[self.rule]})")
        metrics["eval_images_per_s"] = preds.meta["images_per_s"]
        if self.holdout_index is not None:
            held = infer(self.model, self.holdout_index, eval_transform(self.data_cfg), self.class_names,
                         desc="holdout", meta=info, **kw)
            held.save(self.run_dir / rr.HOLDOUT, gallery_n=0, title=f"{c.name} holdout (selection split)")
            for p in held.meta["skipped"]:
                self.skipped.setdefault(p, "could not be decoded")
        # calibration.json/reliability.png (T fitted on <run>/holdout/) and the Grad-CAM figures.
        diagnose_eval(self.run_dir / "eval", self.model, self.data_cfg, preds.logits, preds.targets, preds.paths,
                      self.class_names, holdout_dir=self.run_dir / HOLDOUT_DIR, explain=c.train.explain, seed=c.seed,
                      title=c.name)
        cmp = feat.head_vs_probe(self.probe_pred, preds.indices.tolist(), preds.targets, preds.predicted())
        if cmp and self.probe is not None:
            self.probe["paired"] = cmp
            log.info("head vs probe on the same %d val images: accuracy %.4f vs %.4f; only the head right on %d, "
                     "only the probe on %d (McNemar exact p = %s)", cmp["n"], cmp["head_accuracy"],
                     cmp["probe_accuracy"], cmp["head_only_correct"], cmp["probe_only_correct"],
                     "skipped" if cmp["mcnemar_exact_p"] is None else f"{cmp['mcnemar_exact_p']:.3g}")
        return metrics

    def _recalibrate(self, ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
        """New BatchNorm statistics for the selected checkpoint (engine/recalibrate.py), written back into
        it so that evaluate, predict and export score what is reported here. Training mode never reads
        them, so resuming from this file trains exactly as before; a second final evaluation redoes it."""
        c = self.cfg
        done = recalibrate_bn(self.model, self.train_index, eval_transform(self.data_cfg), self.source,
                              c.train.recalibrate_bn, batch_size=c.data.batch_size, workers=c.data.workers,
                              device=self.device, amp=c.train.amp, channels_last=c.model.channels_last, seed=c.seed)
        done["size"] = int(self.data_cfg["input_size"][-1])
        ckpt["model"], ckpt["recalibrated_bn"] = self.model.state_dict(), done
        save_checkpoint(ckpt, path)
        log.info("BatchNorm statistics of %d layers re-estimated on %d train images at %d px (%.1f s) -> %s",
                 done["layers"], done["images"], done["size"], done["seconds"], path)
        return done

    def run_summary(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """run.json's fields of this training run (the caller adds run_dir and resumed)."""
        summary = {k: metrics.get(k) for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall")}
        rows = [r for r in self.history if r.get("images_per_s")]
        selection = sel.selection_record(self.best, self.rule, len(self.holdout_pos))
        return {
            "metrics": summary,
            "metrics_ci": {k: v for k, v in (metrics.get("ci") or {}).items() if k in summary},
            "monitor": self.best,
            "best_epoch": self.best["epoch"],
            "selection": selection,
            "epochs_run": self.epoch,
            "stages": [s.__dict__ for s in plan_stages(self.cfg)],
            "images_per_s": round(sum(r["images_per_s"] for r in rows) / len(rows), 2) if rows else None,
            "eval_images_per_s": metrics.get("eval_images_per_s"),
            "train_seconds": round(sum(r["seconds"] for r in self.history), 2),
            "feature_seconds": round(self.features_seconds, 2),
            "n_train": len(self.train_index), "n_val": len(self.val_index), "n_holdout": len(self.holdout_pos),
            "n_skipped": len(self.skipped),
            "skipped": [{"path": p, "reason": r} for p, r in sorted(self.skipped.items())],
            "probe": self.probe,
            "recalibrated_bn": self.recalibrated,
            **rr.describe_train(self.cfg, n_train=len(self.train_index), n_val=len(self.val_index),
                                classes=self.classes, epochs_run=self.epoch, best=self.best, selection=selection,
                                recalibrated=(self.recalibrated or {}).get("images")),
        }
