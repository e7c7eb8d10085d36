"""`imagenette-lab audit` on generated data with planted answers (weight-free `pixels` embeddings)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from imagenette_lab.audit import duplicates as dup
from imagenette_lab.audit.labels import plan
from imagenette_lab.cli import main
from tests.audit.planted import make_planted, pattern_image
from tests.helpers import REAL_224, TINY_CLASSES, require

FAST = ["--model", "pixels", "--workers", "0", "--gallery", "4"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("planted") / "data"
    return root, make_planted(root)


@pytest.fixture(scope="module")
def audited(planted, tmp_path_factory) -> tuple[Path, dict[str, Path], Path, str]:
    root, files = planted
    out = tmp_path_factory.mktemp("audit") / "audit"
    assert main(["audit", "--root", str(root), "--out", str(out), *FAST]) == 0
    return root, files, out, (out / "duplicates.csv").read_text()


def test_planted_cross_split_copies_are_the_only_leaks(audited) -> None:
    _, f, out, _ = audited
    d = pd.read_csv(out / "duplicates.csv")
    cross = d[d["cross_split"]]
    pairs = {frozenset((r.path_a, r.path_b)): r for r in cross.itertuples()}
    exact = pairs.pop(frozenset((str(f["exact_src"]), str(f["exact_copy"]))))
    assert "exact" in exact.methods and exact.same_file and exact.cosine > 0.999
    small = pairs.pop(frozenset((str(f["resized_src"]), str(f["resized_copy"]))))
    # A re-encoded, 64 -> 40 px copy: different bytes, found by both near-duplicate methods.
    assert not small.same_file and "phash" in small.methods and "embedding" in small.methods
    assert not pairs, f"unexpected cross-split pairs: {list(pairs)}"
    s = json.loads((out / "summary.json").read_text())
    assert s["duplicates"]["pairs"] == {"train-train": 0, "train-val": 2, "val-val": 0}
    assert s["duplicates"]["by_method"]["exact"]["train-val"] == 1
    assert s["leakage"] == {"cross_split_pairs": 2, "by_split_pair": {"train-val": 2}}


def test_flipped_label_is_ranked_first(audited) -> None:
    _, f, out, _ = audited
    lab = pd.read_csv(out / "label_issues.csv")
    top = lab.iloc[0]
    assert top["path"] == str(f["flipped"]) and top["rank"] == 1
    assert top["given"] == TINY_CLASSES[0] and top["suggested"] == TINY_CLASSES[2]
    assert top["score"] < np.min(lab["score"].to_numpy()[1:], initial=1.0)


def test_odd_images_and_unreadable_files_are_listed(audited) -> None:
    _, f, out, _ = audited
    odd = pd.read_csv(out / "odd_images.csv")
    found = {(Path(p).name, i) for p, i in zip(odd["path"], odd["issue"])}
    for name, issue in [("blank.png", "near_blank"), ("tiny.png", "tiny"), ("wide.png", "extreme_aspect"),
                        ("rotated.jpg", "exif_rotated"), ("grey.png", "greyscale"),
                        ("notes.txt", "unreadable"), ("truncated.jpg", "unreadable")]:
        assert (name, issue) in found, (name, issue)
    assert not odd[(odd["issue"] == "near_blank") & (odd["path"] != str(f["blank"]))].size
    s = json.loads((out / "summary.json").read_text())
    assert s["odd_images"]["counts"]["train"]["unreadable"] == 2
    share = s["odd_images"]["greyscale_share"]["train"][TINY_CLASSES[2]]
    assert share == pytest.approx(1 / 15, abs=1e-4)  # grey.png among 10 patterns + 5 odd images that decode


def test_outputs_contract_and_fast_rerun(audited, caplog, capsys) -> None:
    root, _, out, first_csv = audited
    for name in ("gallery_cross_split.png", "gallery_label_issues.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = json.loads((out / "run.json").read_text())
    s = json.loads((out / "summary.json").read_text())
    assert run["kind"] == "audit" and run["summary"]["cross_split_pairs"] == 2
    assert s["peak_rss_mb"]["main"] > 0 and s["timings_s"]["total"] > 0 and s["embedding"]["dim"] == 768
    with caplog.at_level(logging.INFO):
        code = main(["audit", "--root", str(root), "--out", str(out), *FAST, "--fail-on-leakage"])
    assert code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("imagenette-lab audit: leakage: 2 cross-split duplicate pair(s) (train-val 2)")
    assert "0 file(s) to decode" in caplog.text and "reusing cached features" in caplog.text
    assert (out / "duplicates.csv").read_text() == first_csv


def test_no_leakage_exits_zero_and_analyze_includes_the_audit(tmp_path: Path, capsys) -> None:
    root = make_dataset_without_copies(tmp_path / "data")
    runs = tmp_path / "runs"
    assert main(["audit", "--root", str(root), "--out", str(runs / "audit"), *FAST, "--fail-on-leakage"]) == 0
    assert main(["analyze", "--root", str(root), "--out", str(runs / "analysis")]) == 0
    assert "audit (" in capsys.readouterr().out
    s = json.loads((runs / "analysis" / "summary.json").read_text())
    assert s["audit"]["cross_split_pairs"] == 0 and s["audit"]["dir"] == str(runs / "audit")
    # Another dataset's audit is not picked up by default; a folder without an audit is one line.
    other = make_dataset_without_copies(tmp_path / "other", seed=5)
    assert main(["analyze", "--root", str(other), "--out", str(runs / "analysis2")]) == 0
    assert "audit" not in json.loads((runs / "analysis2" / "summary.json").read_text())
    assert main(["analyze", "--root", str(other), "--out", str(runs / "a3"), "--audit", str(tmp_path)]) == 1
    assert "holds no finished audit" in capsys.readouterr().err


def make_dataset_without_copies(root: Path, per_class: int = 4, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for label, cls in enumerate(TINY_CLASSES):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pattern_image(label, rng).save(root / split / cls / f"{i}.png")
    return root


def test_one_image_per_class_skips_the_label_check(tmp_path: Path, capsys) -> None:
    root = make_dataset_without_copies(tmp_path / "data", per_class=1)
    shutil.rmtree(root / "val")
    out = tmp_path / "audit"
    assert main(["audit", "--root", str(root), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "label check: label-error check skipped" in printed
    assert pd.read_csv(out / "label_issues.csv").empty and (out / "gallery_label_issues.png").is_file()
    assert json.loads((out / "summary.json").read_text())["leakage"]["cross_split_pairs"] == 0


def test_too_few_images_for_k_folds_reduces_k(tmp_path: Path, capsys) -> None:
    root = make_dataset_without_copies(tmp_path / "data", per_class=1)  # 2 per class over both splits
    out = tmp_path / "audit"
    assert main(["audit", "--root", str(root), "--out", str(out), *FAST, "--folds", "5"]) == 0
    assert "k-fold reduced from 5 to 2" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["label_issues"]["folds"] == 2


def test_plan_leaves_out_singleton_classes() -> None:
    usable, k, notes = plan(np.array([0, 0, 0, 1, 1, 1, 2]), 3, folds=5)
    assert usable.tolist() == [0, 1] and k == 3 and len(notes) == 2


def test_bad_arguments_and_missing_extra_are_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    assert main(["audit", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    assert main(["audit", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--folds", "1"]) == 2
    root = make_dataset_without_copies(tmp_path / "data", per_class=1)
    monkeypatch.setitem(__import__("sys").modules, "imagehash", None)
    assert main(["audit", "--root", str(root), "--out", str(tmp_path / "o"), *FAST]) == 1
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(errors) == 3 and "pip install 'imagenette-lab[audit]'" in errors[-1]


def test_blocked_searches_equal_brute_force(monkeypatch) -> None:
    monkeypatch.setattr(dup, "BLOCK_ELEMENTS", 64)  # many small blocks
    g = torch.Generator().manual_seed(0)
    n = 40
    emb = dup.normalise(torch.randn(n, 8, generator=g))
    emb[7] = emb[3]  # a planted identical pair
    rows = np.arange(100, 100 + n)
    split = np.zeros(200, dtype=int)
    split[120:140] = 1
    (a, b, cos), (r, best, best_cos) = dup.cosine_pairs(emb, rows, split, threshold=0.5, top_k=3)
    sim = (emb @ emb.T).fill_diagonal_(-2)
    vals, idx = sim.topk(3, dim=1)
    ref = {(i + 100, int(j) + 100) for i in range(n) for v, j in zip(vals[i], idx[i]) if v >= 0.5}
    assert set(zip(a.tolist(), b.tolist())) == ref and (107, 103) in ref
    cross = sim.masked_fill(torch.as_tensor(split[rows][:, None] == split[rows][None, :]), -2).max(1)
    assert r.tolist() == rows.tolist() and best.tolist() == (cross.indices + 100).tolist()
    assert np.allclose(best_cos, cross.values.numpy())

    rng = np.random.default_rng(0)
    codes = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    codes[5] = codes[9] ^ 0b1011  # 3 bits apart
    a, b, d = dup.hamming_pairs(codes, rows, max_dist=3, top_k=2)
    brute = {(i + 100, j + 100) for i in range(n) for j in range(n)
             if i != j and bin((int(codes[i]) ^ int(codes[j])) & (2**64 - 1)).count("1") <= 3}
    assert set(zip(a.tolist(), b.tolist())) == brute == {(105, 109), (109, 105)} and d.tolist() == [3, 3]
    merged = dup.merge_pairs({"exact": (np.array([109]), np.array([105])), "phash": (a, b), "embedding": ([], [])})
    assert merged.to_dict("records") == [{"a": 105, "b": 109, "methods": "exact+phash"}]


def test_exact_groups_are_capped() -> None:
    m = dup.MAX_EXACT_GROUP + 10  # a star around the first copy, not m(m-1)/2 pairs
    a, b = dup.exact_pairs(["x"] * m + ["", "", "y", "y"])
    pairs = set(zip(a.tolist(), b.tolist()))
    assert len(pairs) == (m - 1) + 1 and (0, m - 1) in pairs and (m + 2, m + 3) in pairs
    assert not {m, m + 1} & set(a.tolist() + b.tolist())  # unreadable files have no hash


@pytest.mark.slow
def test_real_subset_with_pretrained_embeddings(tmp_path: Path) -> None:
    """10 train + 10 val photos per class of the real data, plus one resized val copy of a train photo."""
    from PIL import Image

    src = require(REAL_224)
    root = tmp_path / "real"
    for split in ("train", "val"):
        for cls in sorted(p.name for p in (src / split).iterdir()):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((src / split / cls).iterdir())[:10]:
                (root / split / cls / f.name).symlink_to(f)
    cls = sorted(p.name for p in (src / "train").iterdir())[0]
    first = sorted((src / "train" / cls).iterdir())[0]
    Image.open(first).convert("RGB").resize((160, 160)).save(root / "val" / cls / "copy.jpg", quality=70)
    out = tmp_path / "audit"
    assert main(["audit", "--root", str(root), "--out", str(out), "--workers", "1"]) == 0
    d = pd.read_csv(out / "duplicates.csv")
    hit = d[(d["path_a"] == str(root / "train" / cls / first.name)) & (d["path_b"] == str(root / "val" / cls / "copy.jpg"))]
    assert len(hit) == 1 and "phash" in hit["methods"].iloc[0]
    s = json.loads((out / "summary.json").read_text())
    assert s["label_issues"]["oof_accuracy"] > 0.9 and s["embedding"]["model"] == "efficientnet_lite0"


def test_scan_cache_rescans_only_changed_files(tmp_path: Path, caplog) -> None:
    from imagenette_lab.audit import scan

    root = make_dataset_without_copies(tmp_path / "data", per_class=1)
    paths = sorted(str(p) for p in root.rglob("*.png"))
    cache = tmp_path / "cache" / "scan.csv"
    first = scan.scan(paths, cache)
    pattern_image(0, np.random.default_rng(9)).save(paths[0])  # new content, new size/mtime
    with caplog.at_level(logging.INFO):
        second = scan.scan(paths, cache)
    assert "1 file(s) to decode, 5 reused" in caplog.text
    assert second["sha1"].iloc[0] != first["sha1"].iloc[0]
    pd.testing.assert_frame_equal(second.iloc[1:], first.iloc[1:])
    cache.write_text("garbage")  # a damaged cache is only a lost shortcut
    assert scan.scan(paths, cache)["sha1"].tolist() == second["sha1"].tolist()
