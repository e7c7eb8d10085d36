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
    md = (smoke_out / "report.md").read_text()
    assert "Exp 2" in md and "Exp 3" in md and "not run" not in md
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


def test_bad_set_key_of_a_late_stage_fails_before_any_work(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    assert main(["reproduce", "--profile", "smoke", "--out", str(out), "--set", "exp2.train.epochs=1",
                 "--set", "exp3.train.epochz=2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exp3" in err[0] and "train.epochz" in err[0] and "valid keys" in err[0]
    assert not out.exists()  # nothing ran, not even the analysis
    assert main(["reproduce", "--profile", "smoke", "--out", str(out), "--set", "exp3.train.epochs=0"]) == 1
    assert "train.epochs must be >= 1" in capsys.readouterr().err and not out.exists()


def test_dataset_fingerprint_and_change_description(tmp_path: Path) -> None:
    from imagenette_lab.stage_record import dataset_fingerprint, describe_changes

    root = tmp_path / "d"
    (root / "train" / "a").mkdir(parents=True)
    (root / "train" / "a" / "1.jpg").write_bytes(b"x" * 10)
    fp = dataset_fingerprint(root)
    assert dataset_fingerprint(root) == fp
    (root / "train" / "a" / "2.jpg").write_bytes(b"y")
    assert dataset_fingerprint(root) != fp
    old = {"hash": "h", "inputs": {"dataset": "d1", "config": {"train": {"epochs": 5}, "data": {"img_size": 112}}}}
    new = {"dataset": "d1", "config": {"train": {"epochs": 20}, "data": {"img_size": 128}}}
    assert describe_changes(old, new) == "config.data.img_size 112 -> 128, config.train.epochs 5 -> 20"
    assert describe_changes(None, new) == "no record of the settings it was run with"


# Changes smoke_out: keep it after every test that reads the first smoke run.
def test_changed_setting_reruns_that_stage_and_says_so(smoke_out: Path, caplog) -> None:
    others = {p: p.stat().st_mtime_ns for p in smoke_out.glob("*/run.json") if p.parent.name != "exp2_scratch"}
    caplog.set_level("INFO")
    assert main(["reproduce", "--profile", "smoke", "--out", str(smoke_out), "--set", "exp2.train.epochs=2"]) == 0
    changed = [r.getMessage() for r in caplog.records if "settings changed" in r.getMessage()]
    assert len(changed) == 1 and changed[0].startswith("exp2: settings changed (config.train.epochs 1 -> 2)")
    assert caplog.text.count("already complete") == 3  # analysis, exp1, exp3 untouched
    assert {p: p.stat().st_mtime_ns for p in others} == others
    meta = json.loads((smoke_out / "exp2_scratch" / "run.json").read_text())
    assert meta["epochs_run"] == 2 and not meta["resumed"]
    assert len((smoke_out / "exp2_scratch" / "history.jsonl").read_text().splitlines()) == 2
    assert not (smoke_out / ".replaced").exists()  # the old 1-epoch run is gone, not kept aside
    # The same settings again: everything is skipped.
    caplog.clear()
    assert main(["reproduce", "--profile", "smoke", "--out", str(smoke_out), "--set", "exp2.train.epochs=2"]) == 0
    assert caplog.text.count("already complete") == 4 and "settings changed" not in caplog.text


def test_unfinished_unchanged_stage_resumes(smoke_out: Path, caplog) -> None:
    (smoke_out / "exp2_scratch" / "run.json").unlink()  # as if stopped before the end
    caplog.set_level("INFO")
    assert main(["reproduce", "--profile", "smoke", "--out", str(smoke_out), "--set", "exp2.train.epochs=2"]) == 0
    assert "exp2: resuming" in caplog.text and "rerunning" not in caplog.text
    meta = json.loads((smoke_out / "exp2_scratch" / "run.json").read_text())
    assert meta["resumed"] and meta["epochs_run"] == 2
    # Stopped again, then asked for other settings: no resume of the old run, a fresh one.
    (smoke_out / "exp2_scratch" / "run.json").unlink()
    caplog.clear()
    assert main(["reproduce", "--profile", "smoke", "--out", str(smoke_out), "--stages", "exp2"]) == 0
    assert "exp2: settings changed (config.train.epochs 2 -> 1)" in caplog.text
    meta = json.loads((smoke_out / "exp2_scratch" / "run.json").read_text())
    assert not meta["resumed"] and meta["epochs_run"] == 1
