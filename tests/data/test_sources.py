"""The data-source layer: persisted split index, the uint8 tensor cache and its bad inputs."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from imagenette_lab.cli import main
from imagenette_lab.data import index_store, tensor_cache
from imagenette_lab.data.dataset import index_split
from imagenette_lab.data.sources import make_dataset
from imagenette_lab.data.transforms import default_data_cfg, eval_transform, train_transform
from imagenette_lab.errors import UserError

DC = default_data_cfg(32, crop_pct=0.875)  # cache side 36


def _count_opens(monkeypatch) -> list[str]:
    opened: list[str] = []
    real = Image.open

    def counting(fp, *a, **k):
        opened.append(str(fp))
        return real(fp, *a, **k)

    monkeypatch.setattr(Image, "open", counting)
    return opened


def test_second_index_opens_no_image_and_reprobes_changed_files(tiny_dataset: Path, monkeypatch) -> None:
    first = index_split(tiny_dataset, "train")
    assert (tiny_dataset / ".imagenette_lab" / "index-train.json").is_file()
    opened = _count_opens(monkeypatch)
    second = index_split(tiny_dataset, "train")
    assert opened == []
    assert second.samples == first.samples and second.skipped == first.skipped
    # A changed file (new size + mtime) is probed again; a hidden cache folder is never a split/class.
    victim = first.samples[0].path
    Image.new("RGB", (20, 10), (9, 9, 9)).save(victim, "JPEG")
    third = index_split(tiny_dataset, "train")
    assert opened == [str(victim)]
    assert (third.samples[0].width, third.samples[0].height) == (20, 10)
    assert third.classes == first.classes


def test_read_only_data_folder_uses_the_user_cache(tiny_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    real = index_store._writable_dir
    monkeypatch.setattr(index_store, "_writable_dir", lambda d: False if tiny_dataset in d.parents or d == tiny_dataset / ".imagenette_lab" else real(d))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    d = index_store.cache_dir(tiny_dataset)
    assert d.parent == tmp_path / "xdg" / "imagenette_lab" and d.name.startswith("tiny-")
    index_split(tiny_dataset, "val")
    assert (d / "index-val.json").is_file() and not (tiny_dataset / ".imagenette_lab").exists()


def test_cache_gives_the_folder_pixels_and_lists_bad_files(tiny_dataset: Path) -> None:
    idx = index_split(tiny_dataset, "train")
    folder = make_dataset(idx, eval_transform(DC))
    cached = make_dataset(idx, eval_transform(DC), source="cache", size=36, workers=0)
    n_none = 0
    for i in range(len(idx)):
        a, b = folder[i], cached[i]
        assert (a is None) == (b is None)
        if a is None:
            n_none += 1
            continue
        assert torch.equal(a[0], b[0]) and a[1:] == b[1:]  # eval from the cache is exact
    assert n_none == 1
    m = cached.cache.manifest
    assert list(m["skipped"]) == ["n01440764/truncated.JPEG"] and m["n_skipped"] == 1
    assert m["size"] == 36 and m["policy"] == "short-crop-bilinear" and len(m["labels"]) == len(idx)


def test_cached_crops_are_seeded_per_sample_and_batched(clean_dataset: Path) -> None:
    idx = index_split(clean_dataset, "train")
    tf = train_transform(DC, "baseline", 0.35)
    ds = make_dataset(idx, tf, source="cache", size=36, seed=3, workers=0)
    assert tensor_cache.CropFlip.from_transform(tf) is not None
    ds.set_epoch(2)
    batch = ds.__getitems__([4, 1, 7])
    again = ds.__getitems__([7, 4])  # another batch position: the same crop
    assert torch.equal(batch[0][0], again[1][0]) and torch.equal(batch[2][0], again[0][0])
    assert batch[0][0].shape == (3, 32, 32) and batch[0][0].dtype == torch.float32
    ds.set_epoch(3)
    assert not torch.equal(ds.__getitems__([4])[0][0], batch[0][0])
    # Through a DataLoader with a worker process: identical to the main-process batch.
    from imagenette_lab.engine.evaluate import make_loader

    ds.set_epoch(2)
    x, y, i = next(iter(make_loader(torch.utils.data.Subset(ds, [4, 1, 7]), 3, 1)))
    assert torch.equal(x[0], batch[0][0]) and i.tolist() == [4, 1, 7]
    # Other pipelines (TrivialAugment) run per sample, seeded too.
    ta = make_dataset(idx, train_transform(DC, "trivialaugment"), source="cache", size=36, seed=3)
    assert tensor_cache.CropFlip.from_transform(ta.transform) is None
    assert torch.equal(ta.__getitems__([2])[0][0], ta[2][0])


def test_changed_dataset_rebuilds_and_sizes_live_side_by_side(clean_dataset: Path, caplog) -> None:
    idx = index_split(clean_dataset, "val")
    c1 = tensor_cache.load_or_build(idx, 36, workers=0)
    c2 = tensor_cache.load_or_build(idx, 40, workers=0)
    assert c1.data_path.is_file() and c2.data_path.is_file() and c1.data_path != c2.data_path
    assert tensor_cache.load_or_build(idx, 36, workers=0).data_path == c1.data_path  # reused
    victim = idx.samples[0].path
    Image.new("RGB", (50, 40), (250, 0, 0)).save(victim, "JPEG")
    os.utime(victim, ns=(1, 1))
    idx2 = index_split(clean_dataset, "val")
    with caplog.at_level(logging.WARNING):
        c3 = tensor_cache.load_or_build(idx2, 36, workers=0)
    assert "dataset changed" in caplog.text and "rebuilding" in caplog.text
    assert c3.data_path != c1.data_path and not c1.data_path.exists()
    assert c3.manifest["n_reused"] == len(idx2) - 1
    red = torch.from_numpy(c3.array[0].copy()).float().mean((0, 1))
    assert red[0] > 200 and red[1] < 50
    # The rebuilt cache gives what a fresh decode gives.
    folder = make_dataset(idx2, eval_transform(DC))
    cached = make_dataset(idx2, eval_transform(DC), source="cache", size=36)
    assert all(torch.equal(folder[i][0], cached[i][0]) for i in range(len(idx2)))


def test_building_the_cache_leaves_the_global_rng_alone(clean_dataset: Path) -> None:
    """A run that builds the cache must train as one that finds it built (same dropout, same init)."""
    idx = index_split(clean_dataset, "train")
    state = torch.get_rng_state()
    tensor_cache.load_or_build(idx, 36, workers=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_disk_full_leaves_no_cache_and_one_line(clean_dataset: Path, monkeypatch) -> None:
    idx = index_split(clean_dataset, "val")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    before = sorted(p.name for p in (clean_dataset / ".imagenette_lab").iterdir())
    with pytest.raises(UserError, match="disk full") as e:
        tensor_cache.load_or_build(idx, 36, workers=0)
    assert "\n" not in str(e.value)
    assert f"(needs {len(idx) * 36 * 36 * 3 / 2**10:.1f} KB)" in str(e.value)  # not "0.00 GiB"
    assert sorted(p.name for p in (clean_dataset / ".imagenette_lab").iterdir()) == before


def test_cache_command(tiny_dataset: Path, capsys) -> None:
    assert main(["cache", "--root", str(tiny_dataset), "--size", "36", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    # the truncated JPEG fails to decode; the empty file and the text file never reach the cache
    assert "train: 21 images at 36x36 (1 undecodable, listed in the manifest; 2 more skipped when indexing" in out
    assert "val: 9 images at 36x36 (0 undecodable, listed in the manifest)," in out
    manifests = sorted((tiny_dataset / ".imagenette_lab").glob("tensors-*.json"))
    assert [p.name for p in manifests] == ["tensors-train-36px-short-crop-bilinear.json",
                                           "tensors-val-36px-short-crop-bilinear.json"]
    assert json.loads(manifests[0].read_text())["classes"] == index_split(tiny_dataset, "train").classes
    assert main(["cache", "--root", str(tiny_dataset), "--size", "4"]) == 2
