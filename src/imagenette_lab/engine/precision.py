"""What `train.amp: auto` means on a CPU: bf16 only where the hardware computes it natively.

bf16 autocast is ~2-3x faster than fp32 on x86 CPUs with AMX or AVX512-BF16 instructions, but
~2x SLOWER where oneDNN has to emulate it (measured on a 2-core Xeon without them: EfficientNet-B0
training 18.5 img/s in bf16 vs 40.3 img/s in fp32). torch's own capability query
(`torch.backends.cpu.get_cpu_capability()`) only says "AVX512"/"AVX2", not whether bf16 dot
products exist, so we read the CPU's feature flags (/proc/cpuinfo on Linux; `sysctl` on macOS).
Unknown hardware gets fp32, the choice that is never much slower than the alternative.
"""

from __future__ import annotations

import functools
import logging
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

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
    path = cpuinfo or CPUINFO
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
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


def describe(device: torch.device, amp: str, dtype: torch.dtype | None, channels_last: bool) -> str:
    """One line for the run log: the precision used and why."""
    layout = " + channels_last" if channels_last else ""
    names = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}
    name = names.get(dtype, "fp32") if dtype is not None else "fp32"
    if amp != "auto":
        why = f"train.amp={amp}"
    elif device.type == "cpu":
        why = f"train.amp=auto: {cpu_precision().reason}"
    else:
        why = f"train.amp=auto on {device.type}"
    return f"precision: {name}{layout} on {device.type} ({why})"
