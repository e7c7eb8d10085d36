"""The scripts under examples/ run as documented (tiny generated data, seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_train_and_predict_example(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "train_and_predict.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "trained" in out and "val accuracy" in out
    assert "predict: " in out and "img/s (pytorch)" in out
    assert "top-1 agreement 100%" in out and "onnxruntime agrees on 12/12 images" in out
    assert (tmp_path / "runs" / "example" / "checkpoints" / "best.pt").is_file()
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.onnx.json").is_file()
