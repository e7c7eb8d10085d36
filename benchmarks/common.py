"""Shared by the benchmark scripts: CPU description, peak RSS, result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def cpu_info() -> dict:
    """Model name, cores, the SIMD/AMX flags that decide bf16 speed, torch version and threads."""
    import torch

    from imagenette_lab.engine.precision import cpu_name, speed_flags

    return {"model": cpu_name(), "cpu_count": os.cpu_count(),
            "flags": speed_flags(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "mkldnn_bf16": bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()),
            "platform": platform.platform()}


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory (MiB) of this process, or of its largest finished child process."""
    from imagenette_lab.utils import peak_rss_mib as peak

    return peak(children)


def write_result(out: str | Path, name: str, data: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "-quick" if data.get("args", {}).get("quick") else ""
    path = out / f"{name}{tag}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
