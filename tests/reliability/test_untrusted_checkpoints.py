"""Untrusted checkpoints: a .pt whose pickle would run code is refused everywhere a file is loaded
(predict, train --resume, --weights-file, model.weights_file, the feature cache); the code never
runs (no marker file), the exit code is 1 with one line, and the message says what to do if the
user trusts the file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from imagenette_lab.cli import main
from imagenette_lab.engine import features as feat
from tests.reliability.conftest import TINY_TRAIN, error_lines, sets


class _RunsCode:
    """Unpickling this calls os.system(cmd): the classic malicious-checkpoint payload."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def write_evil(path: Path, marker: Path, checkpoint_like: bool = True) -> Path:
    """A torch.save file that looks like one of our checkpoints but creates `marker` when unpickled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = _RunsCode(f"touch {marker}")
    obj = ({"format": "imagenette-lab/checkpoint", "version": 1, "model": payload, "epoch": 1}
           if checkpoint_like else {"state_dict": payload})
    torch.save(obj, path)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "the pickled payload ran"


def _refused(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"imagenette-lab {command}: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_predict_refuses_code_in_checkpoint(tmp_path: Path, marker: Path, small_dataset: Path, capsys) -> None:
    evil = write_evil(tmp_path / "model.pt", marker)
    assert main(["predict", str(evil), str(small_dataset / "val")]) == 1
    _refused(capsys, "predict")
    # The same file as a run directory's best.pt.
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(evil, run / "checkpoints" / "best.pt")
    assert main(["predict", str(run), str(small_dataset / "val")]) == 1
    _refused(capsys, "predict")


def test_resume_refuses_code_in_checkpoint(tmp_path: Path, marker: Path, small_dataset: Path, capsys) -> None:
    run = tmp_path / "run"
    write_evil(run / "checkpoints" / "last.pt", marker)
    write_evil(run / "checkpoints" / "last.pt.prev", marker)
    assert main(["train", "--resume", str(run)]) == 1
    _refused(capsys, "train")
    # With an explicit config too (the checkpoint is still read for the weights).
    args = ["train", "--config", "exp2_scratch_cpu", "--resume", str(run), "--root", str(small_dataset)]
    assert main(args + sets(*TINY_TRAIN)) == 1
    _refused(capsys, "train")


def test_weights_file_refuses_code(tmp_path: Path, marker: Path, small_dataset: Path, capsys) -> None:
    evil = write_evil(tmp_path / "weights.pth", marker, checkpoint_like=False)
    assert main(["predict", "resnet18", "--weights-file", str(evil), str(small_dataset / "val")]) == 1
    assert "trust" in _refused(capsys, "predict").lower()
    assert main(["zero-shot", "--model", "resnet18", "--weights-file", str(evil), "--root", str(small_dataset),
                 "--out", str(tmp_path / "zs"), "--workers", "0"]) == 1
    _refused(capsys, "zero-shot")
    args = ["train", "--config", "exp2_scratch_cpu", "--root", str(small_dataset), "--out", str(tmp_path),
            "--name", "wf"] + sets(*TINY_TRAIN, "model.name=resnet18", f"model.weights_file={evil}")
    assert main(args) == 1
    _refused(capsys, "train")


def test_poisoned_feature_cache_is_ignored_not_executed(tmp_path: Path, marker: Path) -> None:
    evil = write_evil(tmp_path / "features" / "train.pt", marker)
    assert feat.load_features(evil, {"any": "meta"}) is None  # treated as a cache miss: recomputed


def test_refusal_message_explains_and_says_how_to_proceed(tmp_path: Path, marker: Path, small_dataset: Path,
                                                          capsys) -> None:
    evil = write_evil(tmp_path / "model.pt", marker)
    assert main(["predict", str(evil), str(small_dataset / "val")]) == 1
    line = _refused(capsys, "predict")
    assert "corrupt" not in line  # it is not damaged: it was refused because it would run code
    assert "trust" in line.lower()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(evil, run / "checkpoints" / "last.pt")
    assert main(["train", "--resume", str(run)]) == 1
    line = _refused(capsys, "train")
    assert "corrupt" not in line and "trust" in line.lower()
