"""Interrupted training loses nothing: SIGINT/SIGTERM save a checkpoint and exit 130/143 without a
traceback, SIGKILL leaves the last checkpoint intact (at most the running epoch is lost), every one
of them resumes to completion, and a damaged last.pt falls back to last.pt.prev (or fails clearly).

The three real processes run concurrently (one interpreter start-up's worth of wall time).
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from imagenette_lab.cli import main
from imagenette_lab.engine.checkpoint import find_resume_checkpoint, load_checkpoint
from tests.reliability.conftest import TINY_TRAIN, error_lines, sets, spawn

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}
WAIT_S = 75


def _epochs_done(run: Path) -> int:
    hist = run / "history.jsonl"
    try:
        return len(hist.read_text().splitlines())
    except OSError:
        return 0


@pytest.fixture(scope="module")
def interrupted(small_dataset: Path, tmp_path_factory) -> dict[str, dict]:
    """Start three long trainings (keeping last.pt.prev), wait until each has finished 2 epochs (so
    last.pt.prev exists), then send SIGINT / SIGTERM / SIGKILL. Returns per run: dir, returncode,
    stderr, epochs_at_signal."""
    out = tmp_path_factory.mktemp("signals")
    procs = {}
    for name in SIGNALS:
        procs[name] = spawn("train", "--config", "exp2_scratch_cpu", "--root", str(small_dataset),
                            "--out", str(out), "--name", name, "--epochs", "1000",
                            *sets(*TINY_TRAIN, "train.checkpoints_keep=last,best,prev"))
    result: dict[str, dict] = {}
    deadline = time.time() + WAIT_S
    try:
        pending = dict(procs)
        while pending and time.time() < deadline:
            for name, proc in list(pending.items()):
                run = out / name
                if proc.poll() is not None:
                    _, err = proc.communicate()
                    pytest.fail(f"{name} ended early ({proc.returncode}): {err[-2000:]}")
                n = _epochs_done(run)
                if n >= 2:
                    proc.send_signal(SIGNALS[name])
                    result[name] = {"dir": run, "epochs_at_signal": n}
                    del pending[name]
            time.sleep(0.05)
        assert not pending, f"no 2 epochs within {WAIT_S}s: {sorted(pending)}"
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=60)
            result[name].update(returncode=proc.returncode, stderr=err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # An untouched copy of a cleanly stopped run, for the damaged-checkpoint cases.
    shutil.copytree(out / "sigterm", out / "pristine")
    result["pristine"] = {"dir": out / "pristine"}
    return result


def _resume_to_end(run: Path, capsys) -> dict:
    ckpt_path, ck = find_resume_checkpoint(run)
    target = int(ck["epoch"]) + 1
    assert main(["train", "--resume", str(run), "--epochs", str(target)]) == 0
    assert "val accuracy" in capsys.readouterr().out
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "complete" and meta["resumed"] and meta["epochs_run"] == target
    return meta


@pytest.mark.parametrize("name, code", [("sigint", 130), ("sigterm", 143)])
def test_sigint_sigterm_save_exit_cleanly_and_resume(interrupted, name: str, code: int, capsys) -> None:
    r = interrupted[name]
    err = r["stderr"]
    assert r["returncode"] == code, err[-3000:]
    assert "Traceback" not in err
    assert "interrupted" in err and f"--resume {r['dir']}" in err
    assert not (r["dir"] / "run.json").exists()  # not marked complete
    ck = load_checkpoint(r["dir"] / "checkpoints" / "last.pt")
    assert ck["epoch"] >= r["epochs_at_signal"]  # nothing finished was lost
    _resume_to_end(r["dir"], capsys)


def test_sigkill_keeps_last_checkpoint_intact_and_resumes(interrupted, capsys) -> None:
    r = interrupted["sigkill"]
    assert r["returncode"] == -signal.SIGKILL
    assert not (r["dir"] / "run.json").exists()
    # The newest checkpoint loads (atomic writes: never a half-written last.pt) ...
    path, ck = find_resume_checkpoint(r["dir"])
    assert path.name == "last.pt" or not (r["dir"] / "checkpoints" / "last.pt").exists()
    # ... and at most the epoch that was running is lost.
    assert ck["epoch"] >= r["epochs_at_signal"]
    _resume_to_end(r["dir"], capsys)


def test_truncated_last_checkpoint_falls_back_to_previous(interrupted, tmp_path: Path, capsys, caplog) -> None:
    run = tmp_path / "run"
    shutil.copytree(interrupted["pristine"]["dir"], run)
    ckdir = run / "checkpoints"
    prev_epoch = load_checkpoint(ckdir / "last.pt.prev")["epoch"]
    data = (ckdir / "last.pt").read_bytes()
    (ckdir / "last.pt").write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING"):
        meta = _resume_to_end(run, capsys)
    text = caplog.text
    assert "corrupt or truncated" in text and "previous good checkpoint" in text and "last.pt.prev" in text
    assert meta["epochs_run"] == prev_epoch + 1


def test_garbage_checkpoints_without_a_good_one_fail_clearly(interrupted, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(interrupted["pristine"]["dir"], run)
    ckdir = run / "checkpoints"
    (ckdir / "last.pt").write_bytes(b"\x00garbage" * 100)
    (ckdir / "last.pt.prev").unlink()
    assert main(["train", "--resume", str(run)]) == 1
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("imagenette-lab train: error: cannot resume from")
    assert "last.pt" in lines[0] and "corrupt or truncated" in lines[0]
    # predict on the damaged file says the same, in one line.
    assert main(["predict", str(ckdir / "last.pt"), str(run)]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "corrupt or truncated" in lines[0]
