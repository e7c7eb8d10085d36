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


def _train_and_get_precision_lines(root: Path, out: Path, size: int, caplog) -> list[str]:
    """One tiny epoch of test_resnet; the run log's `precision:` lines."""
    from imagenette_lab.config import load_config
    from imagenette_lab.engine.train import train

    cfg = load_config("exp2_scratch_cpu", ["model.name=test_resnet", f"data.img_size={size}", "data.batch_size=8",
                                           "data.workers=0", "train.epochs=1"],
                      extra={"name": "r", "out_dir": str(out), "data": {"root": str(root)}})
    with caplog.at_level(logging.INFO, logger="imagenette_lab"):
        assert train(cfg)["status"] == "complete"
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision:")]


def test_training_logs_the_choice_once(fake_cpu, clean_dataset: Path, tmp_path: Path, caplog) -> None:
    fake_cpu(LAPTOP_AVX2)
    lines = _train_and_get_precision_lines(clean_dataset, tmp_path, 16, caplog)
    assert lines == ["precision: fp32 + channels_last on cpu (train.amp=auto: the CPU has no native bf16 "
                     "(no amx_bf16/avx512_bf16): bf16 would be emulated and about 2x slower than fp32)"]


def _timings(monkeypatch, fp32: float, bf16: float) -> list:
    """Fake step times (seconds for the probe's batch); returns the list of dtypes timed."""
    calls: list = []

    def fake(model, x, dtype, steps):
        calls.append(dtype)
        return bf16 if dtype is torch.bfloat16 else fp32

    monkeypatch.setattr(precision, "_time_steps", fake)
    return calls


def test_probe_keeps_bf16_only_where_it_trains_faster(fake_cpu, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(precision, "PROBE_CACHE", tmp_path / "cache" / "precision.json")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    net(torch.zeros(1, 3, 8, 8))
    fake_cpu(LAPTOP_AVX2)  # no native bf16: nothing is timed
    calls = _timings(monkeypatch, 1.0, 0.1)
    assert precision.probe_train_amp(net, "a", (4, 3, 8, 8), True)[0] == "off" and calls == []

    fake_cpu(XEON_AMX)
    calls = _timings(monkeypatch, fp32=1.0, bf16=2.0)  # the EfficientNet-B0 case: bf16 2x slower
    amp, why = precision.probe_train_amp(net, "effnet", (4, 3, 8, 8), True)
    assert amp == "off" and "bf16 2.0 vs fp32 4.0 img/s" in why
    assert calls == [None, torch.bfloat16] * 3  # alternating rounds
    calls = _timings(monkeypatch, fp32=2.0, bf16=1.0)  # the ResNet50 case
    assert precision.probe_train_amp(net, "resnet", (4, 3, 8, 8), True)[0] == "bf16"
    calls = _timings(monkeypatch, fp32=1.0, bf16=0.97)  # a near tie (3 %) keeps fp32
    assert precision.probe_train_amp(net, "tie", (4, 3, 8, 8), True)[0] == "off"
    # Answers persist on disk: asking again times nothing, even if the hardware now looks different.
    calls = _timings(monkeypatch, fp32=1.0, bf16=9.0)
    assert precision.probe_train_amp(net, "resnet", (4, 3, 8, 8), True)[0] == "bf16" and calls == []
    assert "resnet" in (tmp_path / "cache" / "precision.json").read_text()
    # ... but not on another CPU behind the same model name (a VM reports "AMD EPYC" for Zen 3 and 4).
    fake_cpu(XEON_AMX.replace("amx_bf16 amx_tile", "avx512_vnni"))
    assert precision.probe_train_amp(net, "resnet", (4, 3, 8, 8), True)[0] == "off" and calls


def test_real_probe_leaves_the_model_and_rng_alone(fake_cpu, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(precision, "PROBE_CACHE", tmp_path / "precision.json")
    fake_cpu(XEON_AMX)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(123)
    expected = torch.rand(1).item()
    torch.manual_seed(123)
    amp, _ = precision.probe_train_amp(net, "tiny", (2, 3, 8, 8), channels_last=True)
    assert amp in ("bf16", "off")
    assert torch.rand(1).item() == expected  # dropout in the probe did not advance the run's RNG
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net.training and all(p.grad is None for p in net.parameters())


def test_training_records_the_timed_choice(fake_cpu, clean_dataset: Path, tmp_path: Path, caplog,
                                           monkeypatch) -> None:
    """A probe that finds bf16 faster makes the run train in bf16, and the checkpoint keeps that choice."""
    from imagenette_lab.engine.checkpoint import find_resume_checkpoint

    monkeypatch.setattr(precision, "PROBE_CACHE", tmp_path / "cache" / "precision.json")
    fake_cpu(XEON_AMX)
    _timings(monkeypatch, fp32=2.0, bf16=1.0)
    # 32 px, not 16: at 16 px test_resnet's last stage is 1x1, where oneDNN's bf16 conv weight gradient
    # sometimes comes back non-finite depending on what ran before in the process (seen with torch 2.14.1).
    lines = _train_and_get_precision_lines(clean_dataset, tmp_path, 32, caplog)
    assert len(lines) == 1 and lines[0].startswith("precision: bf16 autocast + channels_last on cpu")
    assert "timed test_resnet training at 32x32 px: bf16 8.0 vs fp32 4.0 img/s" in lines[0]
    assert find_resume_checkpoint(tmp_path / "r")[1]["train_amp"] == "bf16"


def test_depthwise_convs_compute_in_fp32_under_bf16_training() -> None:
    """oneDNN's bf16 depthwise backward is slow, so fp32_depthwise runs those convs in fp32 while
    training under bf16 autocast; inference, other convs and the state_dict are unchanged."""
    from imagenette_lab.engine.task import TrainTask

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=8),
                              torch.nn.Conv2d(8, 8, 3, groups=2))
    keys = list(net.state_dict())
    dw, x = net[1], torch.randn(2, 8, 9, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = dw(x)
        assert precision.fp32_depthwise(net) == 1 and precision.fp32_depthwise(net) == 0
        switched = dw(x)
        with torch.no_grad():
            assert torch.equal(dw(x), plain)  # inference: as before
    assert type(dw).__name__ == "Fp32DepthwiseConv2d" and isinstance(dw, torch.nn.Conv2d)
    assert type(net[0]) is torch.nn.Conv2d and type(net[2]) is torch.nn.Conv2d  # grouped, not depthwise
    assert switched.dtype == torch.bfloat16 and not torch.equal(switched, plain)
    assert torch.equal(switched, torch.nn.functional.conv2d(x, dw.weight, dw.bias, 2, 2, 1, 8).to(torch.bfloat16))
    assert list(net.state_dict()) == keys
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autograd through the switched conv still works
        switched.float().sum().backward()
    assert dw.weight.grad is not None and dw.weight.grad.dtype == torch.float32

    other = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=4))
    TrainTask(other, amp="off", device="cpu")
    assert not isinstance(other[0], precision._Fp32Depthwise)  # fp32 training: no fp32 wrapper
    TrainTask(other, amp="bf16", device="cpu")
    assert isinstance(other[0], precision._Fp32Depthwise)
