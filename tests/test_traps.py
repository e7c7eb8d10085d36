"""The smaller traps a newcomer hit (issue 10, item 5): each one now does what its message promises."""

from __future__ import annotations

import http.client
import logging
import shutil
import socket
import urllib.error
from pathlib import Path

import pytest
import torch

from imagenette_lab.cli import main
from imagenette_lab.config import load_config
from imagenette_lab.data import download as dl
from imagenette_lab.engine import progress
from imagenette_lab.engine.checkpoint import parse_keep
from imagenette_lab.engine.plan import initial_weights
from imagenette_lab.errors import UserError
from tests.helpers import make_dataset

TINY = ["model.name=test_resnet", "data.img_size=16", "data.batch_size=8", "data.workers=0", "train.amp=off"]


def sets(*pairs: str) -> list[str]:
    return [a for s in pairs for a in ("--set", s)]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("traps") / "tiny", {"train": 4, "val": 2}, bad_files=False)


def train_args(data: Path, out: Path, name: str, *extra: str, recipe: str = "exp2_scratch_cpu") -> list[str]:
    return ["train", "--config", recipe, "--root", str(data), "--out", str(out), "--name", name,
            "--epochs", "2", *sets(*TINY), *extra]


# --- train --weights-file ----------------------------------------------------------------------------


def test_train_weights_file_starts_from_a_local_checkpoint(data: Path, tmp_path: Path, capsys) -> None:
    import timm

    torch.manual_seed(1)
    imagenet = timm.create_model("test_resnet")
    path = tmp_path / "test_resnet_imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    # exp3 recipe: frozen base, so after training the base still equals the file's weights.
    args = train_args(data, tmp_path, "wf", "--weights-file", str(path), *sets("train.cache_views=1"),
                      recipe="exp3_transfer")
    assert main(args) == 0
    run = tmp_path / "wf"
    assert load_config(run / "config.yaml").model.weights_file == str(path)
    from imagenette_lab.engine.checkpoint import load_checkpoint

    state = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert torch.equal(state["base.conv1.0.weight"], imagenet.state_dict()["conv1.0.weight"])
    # A file for another architecture: one line that says so.
    torch.save({"foo.weight": torch.ones(2)}, tmp_path / "other.pth")
    assert main(train_args(data, tmp_path, "wf2", "--weights-file", str(tmp_path / "other.pth"))) == 1
    assert "does not fit test_resnet" in one_error_line(capsys)
    assert main(["train", "--resume", str(run), "--weights-file", str(path)]) == 2


# --- an explicit pretrained=false beats the recipe's weights tag ---------------------------------


def test_pretrained_false_beats_the_recipes_weights_tag(data: Path, tmp_path: Path, caplog) -> None:
    cfg = load_config("exp3_transfer", ["model.pretrained=false"])
    assert cfg.model.weights == "IMAGENET1K_V1"
    with caplog.at_level(logging.WARNING):
        assert initial_weights(cfg.model) is None
    assert "ignoring weights 'IMAGENET1K_V1'" in caplog.text
    assert initial_weights(load_config("exp3_transfer").model) == "IMAGENET1K_V1"
    assert initial_weights(load_config("exp3_transfer_cpu").model) == "DEFAULT"
    # End to end, offline: without the fix this asked timm for test_resnet.IMAGENET1K_V1 weights.
    assert main(train_args(data, tmp_path, "nopre", *sets("model.pretrained=false", "train.cache_views=1"),
                           recipe="exp3_transfer")) == 0


# --- split-name hints ----------------------------------------------------------------------------------


def test_val_folder_with_another_name_gets_a_hint(data: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "renamed"
    shutil.copytree(data, root)
    (root / "val").rename(root / "validation")
    assert main(train_args(root, tmp_path, "r")) == 1
    line = one_error_line(capsys)
    assert "split 'val' not found" in line and "--set data.val_split=validation" in line
    assert main(train_args(root, tmp_path, "r", *sets("data.val_split=validation"))) == 0


def test_analyze_on_a_split_folder_points_at_the_parent(data: Path, tmp_path: Path, capsys) -> None:
    assert main(["analyze", "--root", str(data / "val"), "--out", str(tmp_path / "a")]) == 1
    line = one_error_line(capsys)
    assert "looks like a split folder itself" in line and f"the root is its parent, {data}" in line
    assert main(["zero-shot", "--root", str(data / "val"), "--out", str(tmp_path / "z"), "--model", "resnet18",
                 "--weights", "none"]) == 1
    assert "looks like a split folder itself" in one_error_line(capsys)


# --- report on a folder without runs -------------------------------------------------------------------


def test_report_on_an_empty_folder_exits_1_with_one_line(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "r" / "report.html"
    assert main(["report", str(empty), "--out", str(out)]) == 1
    assert "no runs found in" in one_error_line(capsys)
    assert not out.exists()


# --- network errors --------------------------------------------------------------------------------


def test_dns_failure_says_check_your_connection(tmp_path: Path, monkeypatch) -> None:
    def no_dns(url, part, timeout):
        raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

    monkeypatch.setattr(dl, "_fetch_once", no_dns)
    with pytest.raises(UserError) as e:
        dl.download_url("https://s3.example.invalid/a.tgz", tmp_path / "a.tgz", retries=1, backoff=0.0)
    msg = str(e.value)
    assert "Name or service not known" in msg and "check your connection" in msg and "resume" not in msg
    # Bytes from an earlier run are kept, and the message says so.
    (tmp_path / "a.tgz.part").write_bytes(b"x" * 2_000_000)
    with pytest.raises(UserError, match=r"check your connection.*2\.0 MB downloaded so far are kept"):
        dl.download_url("https://s3.example.invalid/a.tgz", tmp_path / "a.tgz", retries=0)

    def cut(url, part, timeout):  # a transfer that broke off mid-way: resuming is the right advice
        with open(part, "ab") as f:
            f.write(b"y" * 10)
        raise http.client.IncompleteRead(b"")

    monkeypatch.setattr(dl, "_fetch_once", cut)
    with pytest.raises(UserError, match="run again to resume$"):
        dl.download_url("https://example.com/a.tgz", tmp_path / "a.tgz", retries=0)


# --- progress lines when stderr is not a terminal ----------------------------------------------------


def test_plain_progress_lines_in_logs(data: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.0)  # every step is due
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="imagenette_lab"):
        assert main(train_args(data, tmp_path, "p", *sets("data.batch_size=4"))) == 0
    messages = [r.getMessage() for r in caplog.records]
    lines = [m for m in messages if m.startswith("epoch ") and ": step " in m]
    # 12 images / batch 4 = 3 steps per epoch; the last step of an epoch gets the epoch line instead.
    assert [line.split(": step ")[1].split(",")[0] for line in lines] == ["1/3", "2/3"] * 2
    assert lines[0].startswith("epoch 1/2 main: step 1/3, ") and "img/s, loss " in lines[0]
    # Inference passes (validation, final evaluation) too: 6 val images / batch 4 = 2 batches.
    assert "val: step 1/2" in " ".join(messages) and "eval: step 1/2" in " ".join(messages)
    # On a terminal the tqdm bar is the progress: no extra lines.
    caplog.clear()
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    with caplog.at_level(logging.INFO, logger="imagenette_lab"):
        assert main(train_args(data, tmp_path, "p2", *sets("data.batch_size=4"))) == 0
    assert not [r for r in caplog.records if ": step " in r.getMessage()]


# --- train.checkpoints_keep -------------------------------------------------------------------------


@pytest.mark.parametrize("keep, files", [
    (None, {"last.pt", "best.pt"}),  # the default: no last.pt.prev left behind
    ("last", {"last.pt"}),
    ("all", {"last.pt", "best.pt", "last.pt.prev", "epoch_001.pt", "epoch_002.pt"}),
])
def test_checkpoints_keep(data: Path, tmp_path: Path, keep: str | None, files: set[str]) -> None:
    extra = sets(f"train.checkpoints_keep={keep}") if keep else []
    assert main(train_args(data, tmp_path, "k", *extra)) == 0
    assert {p.name for p in (tmp_path / "k" / "checkpoints").iterdir()} == files
    if keep == "last":  # the final evaluation falls back to last.pt
        assert (tmp_path / "k" / "eval" / "metrics.json").is_file()


def test_checkpoints_keep_is_validated(capsys) -> None:
    assert parse_keep("best") == {"last", "best"} and parse_keep("ALL") == {"last", "best", "prev", "epochs"}
    with pytest.raises(UserError, match="checkpoints_keep"):
        parse_keep("last,bset")
    assert main(["train", "--config", "exp2_scratch_cpu", "--set", "train.checkpoints_keep=bset"]) == 1
    assert "train.checkpoints_keep must be a comma list" in one_error_line(capsys)
