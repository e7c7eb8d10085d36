"""Disk and memory trouble: an unwritable output is reported before any long work (no indexing,
no model built, no request sent); a full disk mid-run and running out of memory end with one line
(the latter suggesting a smaller batch size), never a traceback."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
import torchvision

import imagenette_lab.commands.download  # noqa: F401 - binds the real download_imagenette before any patch
from imagenette_lab import analysis, zeroshot
from imagenette_lab.cli import main
from imagenette_lab.data import dataset, download
from imagenette_lab.engine import checkpoint as ckpt_mod
from imagenette_lab.engine import train as train_mod
from imagenette_lab.engine.checkpoint import load_checkpoint
from imagenette_lab.models import factory
from imagenette_lab.report import html as report_html
from tests.data.test_download import Server
from tests.reliability.conftest import IS_ROOT, TINY_TRAIN, error_lines, sets


def _too_early(what: str):
    def fail(*a, **k):
        raise AssertionError(f"{what} started before the output location was checked")
    return fail


@pytest.fixture
def no_long_work(monkeypatch) -> None:
    """Indexing a dataset, building a model, downloading or reading runs fails the test."""
    for mod in (analysis, zeroshot, train_mod, dataset):
        monkeypatch.setattr(mod, "index_split", _too_early("indexing"))
    monkeypatch.setattr(zeroshot, "create_imagenet_model", _too_early("building the model"))
    monkeypatch.setattr(factory, "create_classifier", _too_early("building the model"))
    monkeypatch.setattr(download, "download_imagenette", _too_early("downloading the dataset"))
    monkeypatch.setattr(report_html, "collect", _too_early("reading the runs"))


def _blocked(tmp_path: Path, how: str) -> Path:
    if how == "under-a-file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file" / "out"
    if IS_ROOT:
        pytest.skip("running as root: a read-only (0555) directory is still writable")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "out"


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"imagenette-lab {command}: error: ")
    return lines[0]


@pytest.mark.parametrize("how", ["under-a-file", "read-only-dir"])
@pytest.mark.parametrize("command", ["analyze", "zero-shot", "train", "report", "reproduce"])
def test_unwritable_output_fails_before_long_work(command: str, how: str, small_dataset: Path, tmp_path: Path,
                                                  no_long_work, capsys) -> None:
    out = _blocked(tmp_path, how)
    data = str(small_dataset)
    # A missing Imagenette-named root would be downloaded: that must not happen before the check either.
    to_download = str(tmp_path / "data" / "imagenette2-160")
    argv = {
        "analyze": ["analyze", "--root", to_download, "--out", str(out)],
        "zero-shot": ["zero-shot", "--root", data, "--out", str(out), "--model", "resnet18", "--weights", "none"],
        "train": ["train", "--config", "exp2_scratch_cpu", "--root", data, "--out", str(out), *sets(*TINY_TRAIN)],
        "report": ["report", data, "--out", str(out / "report.html")],
        "reproduce": ["reproduce", "--root", to_download, "--out", str(out)],
    }[command]
    assert main(argv) == 1
    line = _one_line(capsys, command)
    assert str(out) in line and ("not writable" in line or "cannot write" in line)


@pytest.mark.parametrize("how", ["under-a-file", "read-only-dir"])
def test_download_into_unwritable_root_sends_no_request(how: str, tmp_path: Path, capsys) -> None:
    root = _blocked(tmp_path, how)
    with Server() as server:
        assert main(["download", "--root", str(root), "--url", server.url, "--retries", "0"]) == 1
        assert server.requests == []
    assert "cannot create" in _one_line(capsys, "download")


# --- a full disk in the middle of a run ----------------------------------------------------------


def _enospc_after(n_ok: int):
    calls = {"n": 0}

    def write(path, data):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    from imagenette_lab.utils import atomic_write_bytes as real
    return write


def test_disk_full_while_checkpointing_is_one_line_and_keeps_last_good(small_dataset: Path, tmp_path: Path,
                                                                        monkeypatch, capsys) -> None:
    # Epoch 1 writes last.pt and best.pt; the disk is full from epoch 2's checkpoint on.
    monkeypatch.setattr(ckpt_mod, "atomic_write_bytes", _enospc_after(2))
    args = ["train", "--config", "exp2_scratch_cpu", "--root", str(small_dataset), "--out", str(tmp_path),
            "--name", "full", "--epochs", "3"] + sets(*TINY_TRAIN)
    try:
        code = main(args)
    finally:
        last = tmp_path / "full" / "checkpoints" / "last.pt"
        assert load_checkpoint(last)["epoch"] == 1  # the last good checkpoint survives either way
    assert code == 1
    assert "No space left on device" in _one_line(capsys, "train")


def test_disk_full_while_writing_analysis_is_one_line(small_dataset: Path, tmp_path: Path, monkeypatch,
                                                      capsys) -> None:
    monkeypatch.setattr(analysis, "atomic_write_bytes", _enospc_after(0))
    monkeypatch.setattr(analysis, "atomic_write_text", lambda p, t: _enospc_after(0)(p, t.encode()))
    assert main(["analyze", "--root", str(small_dataset), "--out", str(tmp_path / "a")]) == 1
    assert "No space left on device" in _one_line(capsys, "analyze")
    assert not (tmp_path / "a" / "run.json").exists()


# --- out of memory ------------------------------------------------------------------------------

OOM_KINDS = {
    "MemoryError": lambda: MemoryError(),
    "torch.OutOfMemoryError": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "cpu-allocator": lambda: RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                                          "8589934592 bytes. Error code 12 (Cannot allocate memory)"),
}


def _oom_params():
    for kind in OOM_KINDS:
        for command in ("train", "zero-shot", "predict"):
            if kind == "cpu-allocator" and command != "train":
                continue  # one is enough for this flavour
            yield pytest.param(kind, command, id=f"{command}-{kind}")


@pytest.fixture(scope="module")
def tiny_checkpoint(small_dataset: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    assert main(["train", "--config", "exp2_scratch_cpu", "--root", str(small_dataset), "--out", str(out),
                 "--name", "c", "--epochs", "1"] + sets(*TINY_TRAIN)) == 0
    return out / "c"


@pytest.mark.parametrize("kind, command", list(_oom_params()))
def test_out_of_memory_suggests_a_smaller_batch(kind: str, command: str, small_dataset: Path, tmp_path: Path,
                                                tiny_checkpoint: Path, monkeypatch, capsys) -> None:
    def boom(self, x):
        raise OOM_KINDS[kind]()

    monkeypatch.setattr(factory.Classifier, "forward", boom)
    monkeypatch.setattr(torchvision.models.ResNet, "forward", boom)
    argv = {
        "train": ["train", "--config", "exp2_scratch_cpu", "--root", str(small_dataset), "--out", str(tmp_path),
                  "--name", "oom", "--epochs", "1"] + sets(*TINY_TRAIN),
        "zero-shot": ["zero-shot", "--model", "resnet18", "--weights", "none", "--root", str(small_dataset),
                      "--out", str(tmp_path / "zs"), "--workers", "0", "--amp", "off"],
        "predict": ["predict", str(tiny_checkpoint), str(small_dataset / "val")],
    }[command]
    assert main(argv) == 1
    line = _one_line(capsys, command)
    assert "out of memory" in line and "batch" in line and "smaller" in line


def test_run_json_not_written_when_a_run_fails(small_dataset: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A failed run never looks complete (reports and `reproduce` trust run.json)."""
    def boom(self, x):
        raise MemoryError()

    monkeypatch.setattr(factory.Classifier, "forward", boom)
    args = ["train", "--config", "exp2_scratch_cpu", "--root", str(small_dataset), "--out", str(tmp_path),
            "--name", "failed", "--epochs", "1"] + sets(*TINY_TRAIN)
    assert main(args) == 1
    assert not (tmp_path / "failed" / "run.json").exists()
    capsys.readouterr()
    # ... and a later attempt in the same directory is not blocked by the failed one's leftovers.
    monkeypatch.undo()
    assert main(args) == 0
    assert json.loads((tmp_path / "failed" / "run.json").read_text())["status"] == "complete"
