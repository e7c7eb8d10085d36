"""What `train.amp: auto` means on a CPU: bf16 only where the hardware computes it natively, and
for training only where a short timing probe on the actual model shows it is faster.

bf16 autocast is ~2-3x faster than fp32 on x86 CPUs with AMX or AVX512-BF16 instructions, but
~2x SLOWER where oneDNN has to emulate it (measured on a 2-core Xeon without them: EfficientNet-B0
training 18.5 img/s in bf16 vs 40.3 img/s in fp32). torch's own capability query
(`torch.backends.cpu.get_cpu_capability()`) only says "AVX512"/"AVX2", not whether bf16 dot
products exist, so we read the CPU's feature flags (/proc/cpuinfo on Linux; `sysctl` on macOS).
Unknown hardware gets fp32, the choice that is never much slower than the alternative.

Native bf16 is still not always faster for *training*. oneDNN (torch 2.14) has no fast bf16 backward
for depthwise convolutions with 5x5 kernels or stride 2: 4-15x slower than fp32 on a 2-core AMX Xeon,
which made EfficientNet-B0 train 2x slower in plain bf16 autocast. So under CPU bf16 autocast the
trainer runs depthwise convolutions in fp32 (`fp32_depthwise`; every other op stays bf16: B0 at
128 px then trains ~1.2x faster than in fp32, less at small sizes), except where engine/cpu_kernels.py's
kernel takes them (bf16 in memory, fp32 arithmetic). And on such CPUs
`probe_train_amp` times a few forward+backward steps of the run's own model both ways, keeps bf16
only when it is faster, and caches the answer on disk per CPU, torch, model and shape.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from imagenette_lab.engine import cpu_kernels
from imagenette_lab.engine.fast import cpu_training_rewrites, kernel_trains
from imagenette_lab.utils import atomic_write_text

log = logging.getLogger(__name__)

# x86: AMX tiles with bf16 (Sapphire Rapids+) or AVX512-BF16 (Cooper Lake, Zen 4+).
# aarch64: the ARMv8.6 BF16 extension ("bf16" in /proc/cpuinfo's Features, FEAT_BF16 on macOS).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuPrecision:
    """The autocast dtype `auto` picks on this CPU (None = fp32) and why, for the run log."""

    dtype: torch.dtype | None
    reason: str
    flags: tuple[str, ...]  # the bf16-relevant flags found

    @property
    def label(self) -> str:
        return "bf16" if self.dtype is torch.bfloat16 else "fp32"


def cpu_flags(cpuinfo: Path | None = None) -> set[str]:
    """The CPU feature flags (lower case); empty when they cannot be read."""
    flags: set[str] = set()
    for line in _read_cpuinfo(cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):  # x86 / aarch64
            flags.update(value.lower().split())
    if not flags and platform.system() == "Darwin":
        flags |= _macos_flags()
    return flags


def _macos_flags() -> set[str]:
    try:
        out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True,
                             text=True, timeout=2).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return set()
    return {"bf16"} if out == "1" else set()


def detect_cpu_precision(flags: set[str] | None = None) -> CpuPrecision:
    """bf16 when the CPU has a native bf16 instruction set, else fp32 (+ channels_last)."""
    flags = cpu_flags() if flags is None else flags
    found = tuple(f for f in NATIVE_BF16_FLAGS if f in flags)
    if found:
        return CpuPrecision(torch.bfloat16, f"the CPU computes bf16 natively ({', '.join(found)})", found)
    if not flags:
        return CpuPrecision(None, "the CPU's feature flags are unknown, so fp32 (bf16 may be emulated)", ())
    return CpuPrecision(None, "the CPU has no native bf16 (no amx_bf16/avx512_bf16): bf16 would be "
                              "emulated and about 2x slower than fp32", ())


@functools.lru_cache(maxsize=1)
def cpu_precision() -> CpuPrecision:
    """`detect_cpu_precision()` for this machine, read once per process."""
    return detect_cpu_precision()


def describe(device: torch.device, amp: str, dtype: torch.dtype | None, channels_last: bool,
             reason: str | None = None) -> str:
    """One line for the run log: the precision used and why (`reason` overrides the flag-based one)."""
    layout = " + channels_last" if channels_last else ""
    names = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}
    name = names.get(dtype, "fp32") if dtype is not None else "fp32"
    if amp != "auto":
        why = f"train.amp={amp}"
    elif reason:
        why = f"train.amp=auto: {reason}"
    elif device.type == "cpu":
        why = f"train.amp=auto: {cpu_precision().reason}"
    else:
        why = f"train.amp=auto on {device.type}"
    return f"precision: {name}{layout} on {device.type} ({why})"


class _Fp32Depthwise:
    """Mixin for a depthwise nn.Conv2d: under CPU bf16 autocast with autograd on, compute in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")
                and not kernel_trains(self, x)):  # type: ignore[arg-type]
            dtype = torch.get_autocast_dtype("cpu")
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float()).to(dtype)  # type: ignore[misc]
        return super().forward(x)  # type: ignore[misc]


_FP32_DEPTHWISE: dict[type, type] = {}


def fp32_depthwise(model: nn.Module) -> int:
    """Let `model`'s depthwise convolutions compute in fp32 under CPU bf16 autocast while training.

    Only the backward is slow in bf16 (see the module docstring), so inference is left alone. The
    modules change class in place (a subclass of their own class), so parameters, state_dict keys
    and checkpoints stay exactly as they were. Returns how many convolutions were switched.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and not isinstance(m, _Fp32Depthwise) and 1 < m.groups == m.in_channels:
            cls = type(m)
            if cls not in _FP32_DEPTHWISE:
                _FP32_DEPTHWISE[cls] = type(f"Fp32Depthwise{cls.__name__}", (_Fp32Depthwise, cls), {})
            m.__class__ = _FP32_DEPTHWISE[cls]
            n += 1
    return n


# bf16 must beat fp32 by this factor to be chosen for training: a near tie keeps fp32's precision.
PROBE_MARGIN = 1.05
PROBE_CACHE: Path | None = None  # tests point this at a scratch file


def probe_cache_path() -> Path:
    """precision.json beside the data caches: $IMAGENETTE_LAB_CACHE_DIR, else ~/.cache/imagenette_lab."""
    if PROBE_CACHE is not None:
        return PROBE_CACHE
    from imagenette_lab.data.index_store import user_cache_base

    return user_cache_base() / "precision.json"


def speed_flags(flags: set[str] | None = None) -> list[str]:
    """The flags that decide CPU training speed here (AMX, AVX-512, AVX2/FMA; aarch64 bf16), sorted:
    what run records and benchmark results show beside their times."""
    flags = cpu_flags() if flags is None else flags
    return sorted(f for f in flags if f.startswith(("amx", "avx512", "avx2", "fma")) or f == "bf16")


def cpu_name() -> str:
    """The CPU's model name (for cache keys and benchmark records)."""
    for line in _read_cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "model name":
            return value.strip()
    return platform.processor() or platform.machine()


def _read_cpuinfo(path: Path | None = None) -> str:
    try:
        return (path or CPUINFO).read_text(errors="replace")
    except OSError:
        return ""


def _time_steps(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None, steps: int) -> float:
    """Median seconds of a forward+backward step (one warm-up step first)."""
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            loss = model(x).float().logsumexp(-1).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def probe_train_amp(model: torch.nn.Module, name: str, shape: tuple[int, ...], channels_last: bool,
                    steps: int = 2, rounds: int = 3, flags: set[str] | None = None) -> tuple[str, str]:
    """("bf16" or "off", reason) for training `model` on a CPU under `train.amp: auto`.

    Without native bf16 no probe runs (emulated bf16 is always slower). Otherwise a copy of the
    model is timed on random inputs of `shape` (the caller's weights, RNG and gradients untouched).
    """
    flags = cpu_flags() if flags is None else flags  # read once: for the decision and the cache key
    native = detect_cpu_precision(flags)
    if native.dtype is None:
        return "off", native.reason
    # probe=v9: timed as TrainTask trains (fp32 depthwise convs in bf16, engine/fast.py's CPU rewrites,
    # the fused squeeze-excitation backward since v6, engine/cpu_kernels.py's kernels since v7, the
    # squeeze-excitation sums without fp32 copies since v8, BatchNorm + SiLU + squeeze-excitation in
    # one kernel since v9), in alternating rounds; earlier probes' answers are re-measured. The flags
    # are in the key because a VM's model name can hide the CPU (this project's Zen 3 and Zen 4 machines
    # both say "AMD EPYC").
    key = "|".join([cpu_name(), "+".join(speed_flags(flags)), torch.__version__, name, "x".join(map(str, shape)),
                    "probe=v9", f"kernels={int(cpu_kernels.library() is not None)}", f"cl={int(channels_last)}",
                    f"threads={torch.get_num_threads()}"])
    path = probe_cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(key)
    if not (isinstance(hit, dict) and {"fp32", "bf16"} <= hit.keys()):
        with torch.random.fork_rng(devices=[]):  # dropout/drop-path in the probe must not shift the run's RNG
            torch.manual_seed(0)
            m = copy.deepcopy(model).train()
            cpu_training_rewrites(m)  # as TrainTask runs it on a CPU (before fp32_depthwise wraps convs)
            fp32_depthwise(m)  # as TrainTask runs it in bf16 (a no-op in fp32)
            for p in m.parameters():
                p.requires_grad_(True)
            x = torch.randn(shape)
            if channels_last:
                m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
            # Alternating rounds, median per dtype: a burst of load on a shared machine (seen: one
            # process's fp32 steps 49 -> 35 img/s minutes apart) then hits both alike.
            times: dict[str, list[float]] = {"fp32": [], "bf16": []}
            for _ in range(rounds):
                for d, dt in (("fp32", None), ("bf16", torch.bfloat16)):
                    times[d].append(_time_steps(m, x, dt, steps))
            hit = {d: round(shape[0] / sorted(t)[len(t) // 2], 2) for d, t in times.items()}
        cache[key] = hit
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(cache, indent=1))
        except OSError:
            pass  # an unwritable cache only costs a re-probe next time
    choice = "bf16" if hit["bf16"] >= PROBE_MARGIN * hit["fp32"] else "off"
    size = "x".join(map(str, shape[2:]))
    return choice, (f"timed {name} training at {size} px: bf16 {hit['bf16']:.1f} vs fp32 {hit['fp32']:.1f} img/s "
                    f"on a CPU with native bf16 ({', '.join(native.flags)}); cached in {path}")
