"""Shared by the benchmark scripts: CPU description, peak RSS, result files."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path

from imagenette_lab.utils import peak_rss_mib  # noqa: F401 - the scripts' one peak-RSS reading


def cpu_info() -> dict:
    """Model name, cores, the SIMD/AMX flags that decide bf16 speed, torch version and threads."""
    import torch

    from imagenette_lab.engine.precision import cpu_name, speed_flags

    return {"model": cpu_name(), "cpu_count": os.cpu_count(),
            "flags": speed_flags(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "mkldnn_bf16": bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()),
            "platform": platform.platform()}


class RssPeaks:
    """Peak VmRSS / RssAnon / RssFile (MiB) of this process, sampled every 20 ms from start() to stop().

    The kernel keeps only the total's peak (ru_maxrss); the split says how much is heap (activations,
    glibc's kept heap) and how much is clean file pages (shared libraries, a memory-mapped cache)
    that the kernel can drop under pressure. Linux only: empty elsewhere.
    """

    KEYS = ("VmRSS", "RssAnon", "RssFile")

    def __init__(self) -> None:
        self.peak = dict.fromkeys(self.KEYS, 0)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                lines = Path("/proc/self/status").read_text().splitlines()
            except OSError:
                return
            for line in lines:
                key, _, rest = line.partition(":")
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(rest.split()[0]) // 1024)
            self._done.wait(0.02)

    def start(self) -> "RssPeaks":
        self._thread.start()
        return self

    def stop(self) -> dict[str, int]:
        self._done.set()
        self._thread.join()
        return {k: v for k, v in self.peak.items() if v}


def write_result(out: str | Path, name: str, data: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "-quick" if data.get("args", {}).get("quick") else ""
    path = out / f"{name}{tag}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
