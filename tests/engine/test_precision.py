"""`train.amp: auto` on a CPU: bf16 only with native bf16 instructions, fp32 elsewhere, and the log says why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from imagenette_lab.engine import precision
from imagenette_lab.engine.evaluate import amp_dtype

CPU = torch.device("cpu")

XEON_AMX = "processor\t: 0\nflags\t\t: fpu sse sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
XEON_AVX512_ONLY = "processor\t: 0\nflags\t\t: fpu sse sse2 avx2 avx512f avx512bw avx512vl\n"
LAPTOP_AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\n"


@pytest.fixture
def fake_cpu(tmp_path: Path, monkeypatch):
    """Point the detection at a fake /proc/cpuinfo (and forget this process's cached answer)."""

    def use(text: str | None) -> None:
        path = tmp_path / "cpuinfo"
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)
        monkeypatch.setattr(precision, "CPUINFO", path)
        monkeypatch.setattr(precision, "_macos_flags", lambda: set())
        precision.cpu_precision.cache_clear()

    yield use
    precision.cpu_precision.cache_clear()


@pytest.mark.parametrize("cpuinfo, expected", [
    (XEON_AMX, torch.bfloat16),
    (XEON_AVX512_ONLY, None),  # AVX512 without BF16: oneDNN emulates bf16 -> slower than fp32
    (LAPTOP_AVX2, None),
    (GRAVITON3, torch.bfloat16),
    (None, None),  # flags unreadable: the safe choice
])
def test_auto_picks_bf16_only_with_native_support(fake_cpu, cpuinfo, expected) -> None:
    fake_cpu(cpuinfo)
    assert amp_dtype(CPU, "auto") is expected
    # Explicit choices are never second-guessed.
    assert amp_dtype(CPU, "bf16") is torch.bfloat16 and amp_dtype(CPU, "off") is None


def test_reason_names_the_flags_or_their_absence(fake_cpu) -> None:
    fake_cpu(XEON_AMX)
    p = precision.cpu_precision()
    assert p.label == "bf16" and "amx_bf16" in p.reason and "avx512_bf16" in p.reason
    fake_cpu(LAPTOP_AVX2)
    line = precision.describe(CPU, "auto", amp_dtype(CPU, "auto"), channels_last=True)
    assert line.startswith("precision: fp32 + channels_last on cpu") and "no native bf16" in line
    assert precision.describe(CPU, "off", None, False) == "precision: fp32 on cpu (train.amp=off)"


def test_this_machine_matches_its_flags() -> None:
    """The real detection agrees with the real /proc/cpuinfo (bf16 here only if the flags say so)."""
    flags = precision.cpu_flags()
    if not flags:
        pytest.skip("no readable CPU flags on this platform")
    native = bool({"amx_bf16", "avx512_bf16", "bf16"} & flags)
    assert (amp_dtype(CPU, "auto") is torch.bfloat16) == native


def test_training_logs_the_choice_once(fake_cpu, clean_dataset: Path, tmp_path: Path, caplog) -> None:
    from imagenette_lab.config import load_config
    from imagenette_lab.engine.train import train

    fake_cpu(LAPTOP_AVX2)
    cfg = load_config("exp2_scratch_cpu", ["model.name=test_resnet", "data.img_size=16", "data.batch_size=8",
                                           "data.workers=0", "train.epochs=1"],
                      extra={"name": "r", "out_dir": str(tmp_path), "data": {"root": str(clean_dataset)}})
    with caplog.at_level(logging.INFO, logger="imagenette_lab"):
        assert train(cfg)["status"] == "complete"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision:")]
    assert lines == ["precision: fp32 + channels_last on cpu (train.amp=auto: the CPU has no native bf16 "
                     "(no amx_bf16/avx512_bf16): bf16 would be emulated and about 2x slower than fp32)"]
