from pathlib import Path

import pytest
import torch

from imagenette_lab.data import classes
from imagenette_lab.data.dataset import ImageFolder, collate_skip, index_split, list_splits, load_rgb
from imagenette_lab.errors import UserError
from tests.helpers import REAL_224, TINY_CLASSES, require


def test_index_skips_and_lists_bad_files(tiny_dataset):
    idx = index_split(tiny_dataset, "train")
    assert idx.classes == TINY_CLASSES
    reasons = {Path(s.path).name: s.reason for s in idx.skipped}
    # the truncated JPEG has a valid header: it is caught at decode time (next test)
    assert reasons == {"empty.JPEG": "empty file", "notes.txt": "not an image file extension"}
    # 6 good + grey + cmyk + png (+ truncated, whose header is fine: it fails at decode time)
    names = {s.path.name for s in idx.samples}
    assert {"grey.JPEG", "cmyk.JPEG", "img.png"} <= names
    assert idx.class_counts()[1:] == [6, 6]


def test_modes_converted_to_rgb_and_truncated_skipped(tiny_dataset):
    idx = index_split(tiny_dataset, "train")
    ds = ImageFolder(idx, transform=lambda im: torch.tensor(im.size + (len(im.getbands()),)))
    items = [ds[i] for i in range(len(ds))]
    bad = [idx.samples[i].path.name for i, it in enumerate(items) if it is None]
    assert bad == ["truncated.JPEG"]
    assert all(it[0][2].item() == 3 for it in items if it is not None)
    batch = collate_skip(items[:4])
    assert batch[0].shape[0] == sum(it is not None for it in items[:4])
    assert collate_skip([None, None]) is None


def test_val_uses_train_class_order_and_rejects_unknown(tiny_dataset):
    train = index_split(tiny_dataset, "train")
    val = index_split(tiny_dataset, "val", classes=train.classes)
    assert val.class_counts() == [3, 3, 3]
    (tiny_dataset / "val" / "n09999999").mkdir()
    with pytest.raises(UserError, match="n09999999"):
        index_split(tiny_dataset, "val", classes=train.classes)


def test_bad_roots(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        list_splits(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="no class folders"):
        list_splits(tmp_path / "flat")
    with pytest.raises(UserError, match="not found"):
        index_split(tmp_path / "flat", "train")


def test_subset_is_seeded_and_per_class(clean_dataset):
    idx = index_split(clean_dataset, "train")
    a, b = idx.subset(2, seed=1), idx.subset(2, seed=1)
    assert a.class_counts() == [2, 2, 2]
    assert [s.path for s in a.samples] == [s.path for s in b.samples]


def test_class_table():
    assert [c.imagenet_index for c in classes.IMAGENETTE] == [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]
    wnids = classes.imagenet_wnids()
    assert all(wnids[c.imagenet_index] == c.wnid for c in classes.IMAGENETTE)
    assert classes.display_name("n03888257") == "parachute"
    assert classes.imagenet_labels()[701] == "parachute"
    assert classes.imagenet_indices(["n03888257", "cat"], {"cat": 281}) == [701, 281]
    with pytest.raises(UserError, match="--class-map"):
        classes.imagenet_indices(["my_cats"])


def test_real_train_split_counts_equal_study_table1():
    root = require(REAL_224)
    counts = dict(zip(*[(i := index_split(root, "train")).classes, i.class_counts()]))
    table1 = [963, 955, 993, 858, 941, 956, 961, 931, 951, 960]  # study Table 1, train column
    assert [counts[c.wnid] for c in classes.IMAGENETTE] == table1
    assert load_rgb(i.samples[0].path).mode == "RGB"
