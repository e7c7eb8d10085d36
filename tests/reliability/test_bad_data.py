"""Bad data never crashes a stage: analysis, training (images and the feature cache), zero-shot
evaluation and predict all finish (exit 0), leave out what cannot be read, and list it.

The hostile files (see conftest.write_hostile_files): zero-byte, truncated JPEG, random bytes named
.JPEG, a PNG named .JPEG, grayscale, CMYK, RGBA PNG, palette PNG with transparency, 1x1, 10000x50,
.txt, .DS_Store, a directory symlink to its parent, a file symlink to itself, an empty class folder,
and a chmod-000 file (only meaningful when not running as root: root reads it anyway).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from imagenette_lab.cli import main
from imagenette_lab.predictions import Predictions
from tests.helpers import TINY_CLASSES
from tests.reliability.conftest import (
    EMPTY_CLASS, IS_ROOT, READABLE_ODD, SKIPPED_AT_INDEX, TINY_TRAIN, UNDECODABLE, sets,
)

CLEAN_PER_CLASS = {"train": 5, "val": 2}


def names(paths) -> list[str]:
    return sorted(Path(p).name for p in paths)


def expected_skips(per_split: int = 1) -> list[str]:
    return sorted(list(SKIPPED_AT_INDEX | UNDECODABLE) * per_split)


@pytest.fixture(scope="module")
def image_run(hostile_dataset: Path, tmp_path_factory) -> tuple[Path, str]:
    """One epoch of scratch training on the hostile data, through the CLI."""
    out = tmp_path_factory.mktemp("bad-train")
    args = ["train", "--config", "exp2_scratch_cpu", "--root", str(hostile_dataset), "--out", str(out),
            "--name", "images", "--epochs", "1"] + sets(*TINY_TRAIN)
    code = main(args)
    assert code == 0
    return out / "images", "images"


def test_chmod_000_subcase_status() -> None:
    if IS_ROOT:
        pytest.skip("running as root: a chmod-000 file is still readable, so it is an ordinary image here")
    assert "noread.JPEG" in SKIPPED_AT_INDEX


def test_analysis_lists_unreadable_and_counts_the_rest(hostile_dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "analysis"
    assert main(["analyze", "--root", str(hostile_dataset), "--out", str(out), "--verify"]) == 0
    stdout = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    bad = pd.read_csv(out / "unreadable.csv")
    # Both splits hold the hostile files: each unreadable one is listed once per split, with a reason.
    assert names(bad["path"]) == expected_skips(per_split=2)
    assert bad["reason"].notna().all() and (bad["reason"].str.len() > 0).all()
    assert summary["unreadable"] == len(bad) == 2 * len(SKIPPED_AT_INDEX | UNDECODABLE)
    assert f"{len(bad)} unreadable file(s) left out" in stdout
    for split, n in CLEAN_PER_CLASS.items():
        counts = summary["splits"][split]["counts"]
        # Odd-but-valid images count; the directory symlink loop is not followed (no duplicates).
        assert counts[TINY_CLASSES[0]] == n + len(READABLE_ODD)
        assert counts[TINY_CLASSES[1]] == counts[TINY_CLASSES[2]] == n
        assert counts[EMPTY_CLASS] == 0  # the empty class folder is kept, counted 0
        assert summary["splits"][split]["unreadable"] == len(SKIPPED_AT_INDEX | UNDECODABLE)
    images = pd.read_csv(out / "image_stats.csv")
    assert images["width_max"].max() == 10000 and images["height_min"].min() == 1
    assert (out / "run.json").is_file()


def test_analysis_without_verify_still_lists_header_failures(hostile_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "analysis"
    assert main(["analyze", "--root", str(hostile_dataset), "--out", str(out), "--splits", "train"]) == 0
    bad = pd.read_csv(out / "unreadable.csv")
    assert names(bad["path"]) == sorted(SKIPPED_AT_INDEX)  # the truncated JPEG needs --verify


def test_training_skips_and_lists_bad_files(image_run: tuple[Path, str]) -> None:
    run, _ = image_run
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "complete"
    assert names(s["path"] for s in meta["skipped"]) == expected_skips(per_split=2)
    assert meta["n_skipped"] == len(meta["skipped"])
    assert all(s["reason"] for s in meta["skipped"])
    assert {s["reason"] for s in meta["skipped"] if s["path"].endswith("truncated.JPEG")} == {"could not be decoded"}
    # Every odd-but-valid image was indexed (and all of train's but the truncated one trained).
    n_readable = 3 * CLEAN_PER_CLASS["train"] + len(READABLE_ODD)
    assert meta["n_train"] + meta["n_holdout"] == n_readable + len(UNDECODABLE)
    hist = pd.read_csv(run / "history.csv")
    # Readable images either trained or sit in the holdout slice that selects the checkpoint.
    assert hist["train_n"].iloc[0] + Predictions.load(run / "holdout").n == n_readable
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "eval" / "metrics.json").is_file()


def test_feature_cache_training_skips_and_lists_bad_files(hostile_dataset: Path, tmp_path: Path) -> None:
    args = ["train", "--config", "exp3_transfer_cpu", "--root", str(hostile_dataset), "--out", str(tmp_path),
            "--name", "cache", "--epochs", "1"] + sets(*TINY_TRAIN, "model.freeze_base=true",
                                                          "train.feature_cache=true", "train.cache_views=2")
    assert main(args) == 0
    run = tmp_path / "cache"
    meta = json.loads((run / "run.json").read_text())
    assert names(s["path"] for s in meta["skipped"]) == expected_skips(per_split=2)
    assert meta["n_skipped"] == len(meta["skipped"])
    assert len(list((run / "features").glob("*.pt"))) >= 2  # the cache was written (train + val)
    assert meta["feature_seconds"] >= 0 and meta["probe"] is not None


def test_zero_shot_skips_and_lists_bad_files(hostile_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "zs"
    args = ["zero-shot", "--model", "resnet18", "--weights", "none", "--root", str(hostile_dataset),
            "--out", str(out), "--workers", "0", "--amp", "off", "--batch-size", "8"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert names(s["path"] for s in m["skipped"]) == expected_skips()
    assert m["n_skipped"] == len(m["skipped"])
    assert m["n_images"] == 3 * CLEAN_PER_CLASS["val"] + len(READABLE_ODD)
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == m["n_images"] and not preds["path"].str.endswith("truncated.JPEG").any()
    assert EMPTY_CLASS in m["classes"]  # the empty class folder is a class with no images
    assert (out / "run.json").is_file()


def test_predict_skips_bad_files_and_counts_them(hostile_dataset: Path, image_run: tuple[Path, str],
                                                 capsys) -> None:
    run, _ = image_run
    val = hostile_dataset / "val"
    assert main(["predict", str(run), str(val), "--json"]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert names(r["path"] for r in results) == names(
        [f"{c}_{i}.JPEG" for c in TINY_CLASSES for i in range(CLEAN_PER_CLASS["val"])] + list(READABLE_ODD))
    # Hidden files (.DS_Store) are not inputs; every other unreadable file gets a message and is counted.
    skipped = sorted((SKIPPED_AT_INDEX | UNDECODABLE) - {".DS_Store"})
    for name in skipped:
        assert f"{name} (" in captured.err
    assert f"{len(results)} image(s) classified, {len(skipped)} file(s) skipped" in captured.err
    assert "Traceback" not in captured.err


def test_predict_on_single_bad_files_is_one_line_error(hostile_dataset: Path, image_run, capsys) -> None:
    run, _ = image_run
    d = hostile_dataset / "val" / TINY_CLASSES[0]
    assert main(["predict", str(run), str(d / "zero.JPEG"), str(d / "random.JPEG"), str(d / "notes.txt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("imagenette-lab predict: error: none of the 3 file(s) could be read")
    assert sum(line.startswith("skipping ") for line in err) == 3
