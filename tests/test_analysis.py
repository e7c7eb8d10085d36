"""`analyze_dataset` / `imagenette-lab analyze`: counts, percentages, file-size statistics, outputs.

Expected numbers are computed independently of the code under test: from how the fixtures are
built, and from os.path.getsize + pandas describe() over the same files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from imagenette_lab.analysis import ALL, DESCRIBE_COLUMNS, TOTAL, analyze_dataset
from imagenette_lab.cli import main
from imagenette_lab.errors import UserError
from tests.helpers import REAL_224, REAL_FULLRES, TINY_CLASSES, require

TENCH, SPRINGER, PARACHUTE = TINY_CLASSES
# Files make_dataset puts in train/tench that fail the header check, and the one only a full decode catches.
HEADER_BAD = {"empty.JPEG", "notes.txt"}
DECODE_BAD = {"truncated.JPEG"}
OUTPUTS = [
    "class_counts.csv", "class_counts.md", "class_counts.png", "class_percentages.png",
    "filesize_stats.csv", "filesize_stats.md", "filesize_box.png", "image_stats.csv",
    "unreadable.csv", "summary.json", "run.json",
]
STUDY_TABLE_1_TRAIN = {
    "tench": 963, "English springer": 955, "cassette player": 993, "chain saw": 858,
    "church": 941, "French horn": 956, "garbage truck": 961, "gas pump": 931,
    "golf ball": 951, "parachute": 960,
}


def expected_sizes(root: Path, split: str, exclude: set[str]) -> pd.DataFrame:
    """Independent reference: os.path.getsize of every file not in `exclude`, per class."""
    rows = [
        {"wnid": wnid, "nbytes": os.path.getsize(root / split / wnid / f)}
        for wnid in sorted(os.listdir(root / split))
        for f in os.listdir(root / split / wnid)
        if f not in exclude
    ]
    return pd.DataFrame(rows)


def check_sizes(stats: pd.DataFrame, root: Path, split: str, exclude: set[str]) -> None:
    ref = expected_sizes(root, split, exclude)
    got = stats[stats["split"] == split].set_index("wnid")
    for wnid, grp in ref.groupby("wnid"):
        want = grp["nbytes"].describe()[DESCRIBE_COLUMNS].to_numpy(dtype=float)
        assert got.loc[wnid, DESCRIBE_COLUMNS].to_numpy(dtype=float) == pytest.approx(want, nan_ok=True)
    want_all = ref["nbytes"].describe()[DESCRIBE_COLUMNS].to_numpy(dtype=float)
    assert got.loc[ALL, DESCRIBE_COLUMNS].to_numpy(dtype=float) == pytest.approx(want_all)


def test_tiny_counts_percentages_and_unreadable(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = analyze_dataset(tiny_dataset, out)
    for name in OUTPUTS:
        assert (out / name).is_file(), name

    counts = pd.read_csv(out / "class_counts.csv").set_index("wnid")
    # Train tench: 6 images + grey + CMYK + PNG + truncated (header fine); empty and .txt left out.
    assert counts.loc[[TENCH, SPRINGER, PARACHUTE], "train_count"].tolist() == [10, 6, 6]
    assert counts.loc[[TENCH, SPRINGER, PARACHUTE], "val_count"].tolist() == [3, 3, 3]
    assert counts.loc[TOTAL, ["train_count", "val_count"]].tolist() == [22, 9]
    assert counts.loc[TENCH, "name"] == "tench"
    per_class = counts.drop(index=TOTAL)
    for split, total in (("train", 22), ("val", 9)):
        assert per_class[f"{split}_pct"].sum() == pytest.approx(100.0)
        assert per_class[f"{split}_pct"].to_numpy() == pytest.approx(
            100 * per_class[f"{split}_count"].to_numpy() / total
        )

    bad = pd.read_csv(out / "unreadable.csv")
    assert list(bad.columns) == ["split", "path", "reason"]
    assert {Path(p).name for p in bad["path"]} == HEADER_BAD
    assert set(bad["split"]) == {"train"}

    assert summary["splits"]["train"]["total"] == 22
    assert summary["splits"]["train"]["counts"] == {TENCH: 10, SPRINGER: 6, PARACHUTE: 6}
    assert summary["splits"]["train"]["max_pct"] == pytest.approx(100 * 10 / 22, abs=1e-3)
    assert summary["splits"]["train"]["min_pct"] == pytest.approx(100 * 6 / 22, abs=1e-3)
    assert summary["unreadable"] == 2
    assert json.loads((out / "summary.json").read_text()) == summary
    assert all(Path(p).is_file() for p in summary["files"].values())
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "analysis" and run["status"] == "complete"
    assert run["summary"]["splits"] == {"train": 22, "val": 9}


def test_filesize_stats_match_pandas_describe(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    analyze_dataset(tiny_dataset, out)
    stats = pd.read_csv(out / "filesize_stats.csv")
    assert list(stats.columns) == ["split", "wnid", "name", *DESCRIBE_COLUMNS]
    check_sizes(stats, tiny_dataset, "train", HEADER_BAD)
    check_sizes(stats, tiny_dataset, "val", set())
    md = (out / "filesize_stats.md").read_text()
    assert "| split | wnid | name | count | mean | std | min | 25% | 50% | 75% | max |" in md
    assert md.count("\n| train |") == 4  # 3 classes + ALL


def test_image_stats_modes_and_sizes(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    analyze_dataset(tiny_dataset, out)
    img = pd.read_csv(out / "image_stats.csv").set_index(["split", "wnid"])
    tench = img.loc[("train", TENCH)]
    # 6 RGB JPEGs + RGB PNG + RGB truncated; one L, one CMYK.
    assert (tench["mode_RGB"], tench["mode_L"], tench["mode_CMYK"]) == (8, 1, 1)
    assert (tench["width_min"], tench["width_max"]) == (32, 128)  # the truncated file is 128 px
    assert img.loc[("val", SPRINGER), "count"] == 3
    assert img.loc[("val", SPRINGER), "mode_L"] == 0


def test_verify_drops_undecodable(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = analyze_dataset(tiny_dataset, out, verify=True)
    assert summary["splits"]["train"]["counts"][TENCH] == 9
    bad = pd.read_csv(out / "unreadable.csv")
    assert {Path(p).name for p in bad["path"]} == HEADER_BAD | DECODE_BAD
    reason = bad.loc[bad["path"].str.endswith("truncated.JPEG"), "reason"].item()
    assert "decode" in reason
    check_sizes(pd.read_csv(out / "filesize_stats.csv"), tiny_dataset, "train", HEADER_BAD | DECODE_BAD)


def test_figures_and_markdown(clean_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    analyze_dataset(clean_dataset, out)
    for name in ("class_counts.png", "class_percentages.png", "filesize_box.png"):
        with Image.open(out / name) as im:
            im.load()
            assert im.format == "PNG" and im.width > 200 and im.height > 100
    md = (out / "class_counts.md").read_text()
    assert "| wnid | name | train count | train % | val count | val % |" in md
    assert "| n02102040 | English springer | 6 | 33.33 | 3 | 33.33 |" in md
    assert "| TOTAL | total | 18 | 100.00 | 9 | 100.00 |" in md
    assert pd.read_csv(out / "unreadable.csv").empty


def test_class_missing_from_a_split_and_split_selection(clean_dataset: Path, tmp_path: Path) -> None:
    shutil.rmtree(clean_dataset / "val" / PARACHUTE)
    summary = analyze_dataset(clean_dataset, tmp_path / "both")
    counts = pd.read_csv(tmp_path / "both" / "class_counts.csv").set_index("wnid")
    assert counts.loc[PARACHUTE, ["train_count", "val_count", "val_pct"]].tolist() == [6, 0, 0.0]
    assert counts.loc[TENCH, "val_pct"] == pytest.approx(50.0)
    assert summary["splits"]["val"]["classes"] == 2
    assert PARACHUTE not in summary["splits"]["val"]["counts"]

    summary = analyze_dataset(clean_dataset, tmp_path / "train", splits=["train"])
    assert list(summary["splits"]) == ["train"]
    cols = pd.read_csv(tmp_path / "train" / "class_counts.csv").columns
    assert list(cols) == ["wnid", "name", "train_count", "train_pct"]
    with pytest.raises(UserError, match="test"):
        analyze_dataset(clean_dataset, tmp_path / "x", splits=["train", "test"])


def test_cli_prints_table(clean_dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["analyze", "--root", str(clean_dataset), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "English springer" in text and "analysis written to" in text
    assert [line.split()[-2:] for line in text.splitlines() if line.startswith("total")] == [["18", "9"]]
    assert (out / "run.json").is_file()


@pytest.mark.parametrize("case", ["missing_root", "no_class_folders", "out_under_file", "bad_split"])
def test_cli_bad_input_one_line(case: str, clean_dataset: Path, tmp_path: Path, capsys) -> None:
    root, out = clean_dataset, tmp_path / "out"
    extra: list[str] = []
    if case == "missing_root":
        root = tmp_path / "nowhere"
    elif case == "no_class_folders":
        root = tmp_path / "empty"
        root.mkdir()
        (root / "readme.txt").write_text("x")
    elif case == "out_under_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    else:
        extra = ["--splits", "test"]
    code = main(["analyze", "--root", str(root), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("imagenette-lab analyze: error:"), err
    assert "Traceback" not in err[0]
    if case != "out_under_file":
        assert not out.exists()  # input checked before anything is written


def test_real_224_train_counts_equal_study_table_1(tmp_path: Path) -> None:
    root = require(REAL_224)
    out = tmp_path / "out"
    summary = analyze_dataset(root, out, splits=["train"])
    counts = pd.read_csv(out / "class_counts.csv").set_index("name")
    assert counts.drop(index="total")["train_count"].to_dict() == STUDY_TABLE_1_TRAIN
    assert summary["splits"]["train"]["total"] == sum(STUDY_TABLE_1_TRAIN.values()) == 9469
    # The study: "training dataset percentages varying from 9.06% to 10.49%".
    assert round(summary["splits"]["train"]["min_pct"], 2) == 9.06
    assert round(summary["splits"]["train"]["max_pct"], 2) == 10.49
    check_sizes(pd.read_csv(out / "filesize_stats.csv"), root, "train", set())


def test_real_fullres_sizes_and_partial_classes(tmp_path: Path) -> None:
    root = require(REAL_FULLRES)
    out = tmp_path / "out"
    summary = analyze_dataset(root, out, verify=True)
    stats = pd.read_csv(out / "filesize_stats.csv").set_index(["split", "wnid"])
    for split in summary["splits"]:
        assert stats.loc[(split, ALL), "mean"] > 20_000  # full-size photos, not 224 px thumbnails
        check_sizes(stats.reset_index(), root, split, set())
    counts = pd.read_csv(out / "class_counts.csv").set_index("wnid").drop(index=TOTAL)
    train_classes = set(os.listdir(root / "train"))
    assert set(counts.index[counts["train_count"] > 0]) == train_classes
    assert (counts.loc[~counts.index.isin(train_classes), "train_count"] == 0).all()
    assert summary["unreadable"] == 0
