"""'What this shows': a few generated sentences per section, each stating only what its numbers support."""

from __future__ import annotations

from typing import Any

import pandas as pd

from imagenette_lab import runrecord as rr
from imagenette_lab.report import describe as D
from imagenette_lab.report.display import Run, is_number, read_csv
from imagenette_lab.report.study import STUDY_SETTINGS

P_LEVEL = 0.05


def _acc(m: dict[str, Any], key: str = "accuracy") -> str:
    return D.fmt_ci(m.get(key), D.metric_ci(m, key))


def _variant(run: Run, key: str) -> dict[str, Any]:
    return next((v.metrics for v in run.variants if v.key == key and v.metrics), {})


def _per_class(run: Run, folder) -> str:
    """The weakest class and its most frequent confusion, from classification_report/most_confused."""
    rep = read_csv(run, folder / rr.CLASSIFICATION_REPORT)
    if rep is None or "recall" not in rep.columns or len(rep) < 2:
        return ""
    rep = rep.rename(columns={rep.columns[0]: "class"})
    rep = rep[~rep["class"].astype(str).isin(["accuracy", "macro avg", "weighted avg", "micro avg"])]
    rep = rep[pd.to_numeric(rep.get("support"), errors="coerce").fillna(0) > 0]
    if rep.empty:
        return ""
    worst = rep.loc[pd.to_numeric(rep["recall"], errors="coerce").idxmin()]
    text = f"The weakest class is {worst['class']} (recall {float(worst['recall']):.2f})"
    mc = read_csv(run, folder / rr.MOST_CONFUSED)
    if mc is not None and {"true", "predicted", "count"} <= set(mc.columns) and len(mc):
        top = mc.iloc[0]
        text += f"; the most frequent confusion is {top['true']} → {top['predicted']} ({int(top['count'])} images)"
    return text + "."


def _settings_vs_study(rec: rr.RunRecord) -> str:
    study = STUDY_SETTINGS.get(rec.role or "")
    if not study:
        return ""
    s, diffs = rec.settings, []
    if rec.model.display and rec.model.display != study["model"]:
        diffs.append(f"{rec.model.display} instead of {study['model']}")
    if s.img_size and s.img_size != study["img_size"]:
        diffs.append(f"{s.img_size} px instead of {study['img_size']}")
    if rec.kind == "train" and study.get("epochs") and s.epochs and s.epochs != study["epochs"]:
        diffs.append(f"{s.epochs} epochs instead of {study['epochs']}")
    if rec.kind == "train" and s.train_per_class:
        diffs.append(f"{s.train_per_class} train images per class instead of all (~950)")
    if s.val_is_sample and is_number(s.n_val):
        diffs.append(f"a {s.n_val:,}-image val sample instead of all {s.val_full_size or 3925:,}")
    if not diffs:
        return "Its settings match the study's, so the difference to the study's number is like for like."
    return ("Compared with the study it uses " + "; ".join(diffs) +
            ", so the difference to the study's number reflects these settings, not only the method.")


def _zero_shot(run: Run, rec: rr.RunRecord) -> list[str]:
    from imagenette_lab.report.kinds import out_of_set

    out, r, f = [], _variant(run, rr.RESTRICTED), _variant(run, rr.IMAGENET1000)
    n = r.get("n") or f.get("n")
    if r.get("accuracy") is not None:
        out.append(f"Without any training, picking the most likely of the {rec.dataset.n_classes or 'dataset'}"
                   f" classes gets {_acc(r)} of the {n:,} images right." if is_number(n) else
                   f"Without any training, the 10-way accuracy is {_acc(r)}.")
    if f.get("accuracy") is not None:
        _, top, k = out_of_set(run)
        text = f"Picking from all 1,000 ImageNet classes, the accuracy is {_acc(f)}"
        if k and is_number(n):
            wrong = round(n * (1 - float(f["accuracy"])))
            where = ", ".join(f"{t} → {p} ({c})" for t, p, c in top[:3])
            text += (f"; {k:,} of the {wrong:,} errors are ImageNet classes outside the dataset's, most "
                     f"often {where}")
        out.append(text + ".")
    return out


def _train(run: Run, rec: rr.RunRecord) -> list[str]:
    out, m, s = [], _variant(run, rr.EVAL), rec.settings
    if m.get("accuracy") is not None:
        e = s.epochs_run or s.epochs
        epochs = f"After {e} epoch{'s' if e != 1 else ''}, " if e else ""
        out.append(f"{epochs}the model classifies {_acc(m)} of the {int(m.get('n', s.n_val or 0)):,} "
                   f"{s.val_split or 'val'} images correctly (macro F1 {_acc(m, 'macro_f1')}).")
    hist = read_csv(run, run.path / rr.HISTORY_CSV)
    if hist is not None and {"train_acc", "val_acc"} <= set(hist.columns) and len(hist):
        va = pd.to_numeric(hist["val_acc"], errors="coerce").dropna()
        ta = pd.to_numeric(hist["train_acc"], errors="coerce").dropna()
        if len(va) and len(ta):
            text = f"At the last epoch train accuracy is {ta.iloc[-1]:.3f} and val accuracy {va.iloc[-1]:.3f}"
            if is_number(s.recalibrate_bn):  # the epoch rows are scored before train.recalibrate_bn
                text += " (before the BatchNorm statistics were re-estimated)"
            if ta.iloc[-1] - va.iloc[-1] > 0.05:
                text += ": the model fits its train images clearly better than unseen ones"
            if len(va) >= 3 and va.iloc[-1] > va.iloc[-2] + 0.005 and va.iloc[-1] >= va.max() - 1e-9:
                text += "; val accuracy was still rising at the last epoch"
            out.append(text + ".")
    out.append(_per_class(run, run.path / rr.EVAL))
    probe = rec.raw.get("probe") if isinstance(rec.raw.get("probe"), dict) else {}
    paired = probe.get("paired") if isinstance(probe.get("paired"), dict) else {}
    if is_number(paired.get("mcnemar_exact_p")):
        p = paired["mcnemar_exact_p"]
        verdict = ("a real difference at the 5 % level" if p < P_LEVEL
                   else "no evidence of a difference at the 5 % level")
        out.append(f"A logistic-regression probe on the same frozen features scores {paired['probe_accuracy']:.3f} "
                   f"against the head's {paired['head_accuracy']:.3f} on the same {paired['n']:,} images; only the "
                   f"head is right on {paired['head_only_correct']}, only the probe on {paired['probe_only_correct']}"
                   f" (McNemar exact p = {p:.3g}): {verdict}.")
    sel = s.selection if isinstance(s.selection, dict) else {}
    if sel.get("rule") == "best_on_eval_split":
        out.append("The reported checkpoint was picked on the same images it is scored on, so its number is "
                   "slightly optimistic.")
    return out


def _analysis(run: Run, rec: rr.RunRecord) -> list[str]:
    from imagenette_lab.report.display import read_json

    out = []
    summary = read_json(run, run.path / rr.SUMMARY_JSON)
    splits = summary.get("splits") if isinstance(summary, dict) else None
    for split, s in (splits or {}).items():
        if not (isinstance(s, dict) and is_number(s.get("total")) and is_number(s.get("min_pct"))
                and is_number(s.get("max_pct"))):
            continue
        lo, hi = s["min_pct"], s["max_pct"]
        balance = "near-balanced" if hi <= 1.5 * lo else "unbalanced"
        text = f"The {split} split has {s['total']:,} images, {balance} (class shares {lo:.1f} % to {hi:.1f} %)"
        full = rr.IMAGENETTE_SPLIT_SIZES.get(split)
        if rec.dataset.is_imagenette and full and s["total"] < full:
            text += f"; it is a sample of the {full:,} images of Imagenette's {split} split"
        out.append(text + ".")
    audit = summary.get("audit") if isinstance(summary, dict) else None
    if isinstance(audit, dict) and audit.get("cross_split_pairs") is not None:
        out.append(f"Its audit ({audit.get('dir')}) found {audit['cross_split_pairs']} duplicate pairs across splits"
                   + (f" and {audit['label_issues']} likely label errors" if audit.get("label_issues") is not None
                      else "") + "; pass that folder to `report` to see its galleries.")
    if rec.dataset.is_imagenette:
        out.append("The class folders are the 10 Imagenette WordNet ids, so results on it are set beside "
                   "the study's.")
    elif rec.dataset.n_classes:
        out.append(f"The {rec.dataset.n_classes} class folders are not the 10 Imagenette classes, so no "
                   "result on this dataset is compared with the study's numbers.")
    return out


def _unfinished(run: Run) -> str:
    """How far an unfinished training stage got, from its history and the config it was given."""
    import yaml

    text = "This stage did not finish (no run.json), so it has no final evaluation"
    hist = read_csv(run, run.path / rr.HISTORY_CSV) if run.kind == "train" else None
    if hist is not None and len(hist) and "val_acc" in hist.columns:
        planned = ""
        try:
            cfg = yaml.safe_load(run.config_text or "") or {}
            epochs = (cfg.get("train") or {}).get("epochs")
            planned = f" of {epochs}" if is_number(epochs) else ""
        except yaml.YAMLError:
            pass
        last = pd.to_numeric(hist["val_acc"], errors="coerce").dropna()
        text += f"; {len(hist)}{planned} epoch{'s' if planned or len(hist) != 1 else ''} ran"
        if len(last):
            text += f", val accuracy {last.iloc[-1]:.3f} at the last one"
    return text + ". Rerunning the same command resumes it from its last checkpoint."


def _audit(run: Run) -> list[str]:
    from imagenette_lab.audit.link import condense
    from imagenette_lab.report.display import read_json

    summary = read_json(run, run.path / rr.SUMMARY_JSON)
    if not isinstance(summary, dict):
        return []
    a = condense(run.path, summary)
    if a.get("cross_split_pairs") is None or not is_number(a.get("images")):
        return []
    text = f"The audit of {a['images']:,} images found {a['cross_split_pairs']:,} duplicate pairs across splits"
    text += (" (the same or nearly the same photo in train and val: those val images are not unseen)"
             if a["cross_split_pairs"] else " (no train/val leakage by its thresholds)")
    if a.get("label_issues") is not None:
        text += f" and {a['label_issues']:,} likely label errors to check by eye in the gallery below"
    return [text + "."]


def summarise(run: Run) -> list[str]:
    rec = run.record
    if rec is None:
        return [_unfinished(run)]
    if rec.kind == "analysis":
        return _analysis(run, rec)
    if rec.kind == "audit":
        return _audit(run)
    out = {"zero_shot": _zero_shot, "train": _train}.get(rec.kind, lambda r, c: [])(run, rec)
    if rec.kind in ("zero_shot", "train", "evaluate"):
        if run.comparable:
            out.append(_settings_vs_study(rec))
        elif rec.role and not rec.dataset.is_imagenette:
            out.append("The dataset is not Imagenette (its class folders are not the 10 Imagenette WordNet ids), "
                       "so this run is not compared with the study.")
    for v in run.variants:
        out += v.notes
    return [s for s in out if s]


def comparison_summary(rows: list[dict[str, Any]], tests: list[dict[str, Any]]) -> list[str]:
    """The comparison section's sentences: which of our numbers lie above or below the study's, and
    which differences between our runs the paired tests support."""
    out = []
    for row in rows:
        acc, study = row["ours"]["accuracy"], row["study"]["accuracy"]
        if acc is None or study is None:
            continue
        label = (row["experiment"] or "").replace("exp", "Exp ")
        if row.get("variant_label"):
            label += f" ({row['variant_label']})"
        side = "above" if acc > study else "below" if acc < study else "equal to"
        ci = row.get("ci", {}).get("accuracy") or ""
        text = f"{label}: {acc:.3f}{' ' + ci if ci else ''} is {side} the study's {study:.3f}"
        if ci:
            lo, hi = (float(x) for x in ci.strip("[]").split(","))
            if lo <= study <= hi:
                text += ", and the study's number lies inside our 95 % interval"
        out.append(text + ".")
    for t in tests:
        verdict = "a real difference" if t["significant"] else "not distinguishable"
        out.append(f"{t['a']} vs {t['b']} on the same {t['n']:,} images: only {t['a']} right on {t['a_only']}, "
                   f"only {t['b']} on {t['b_only']} (Holm-corrected p = {t['p_holm']:.3g}): {verdict} at the 5 % level.")
    if out:
        out.append("Our settings differ from the study's where each section says so; a difference to the study "
                   "measures those settings as well as the method.")
    return out
