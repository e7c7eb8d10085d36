"""Small shared helpers: atomic file writes, run metadata, output-directory checks, seeding, byte counts."""

from __future__ import annotations

import json
import os
import platform
import random
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from imagenette_lab.errors import UserError


def fmt_bytes(n: float) -> str:
    """A byte count for people: "812 bytes", "34.2 KB", "2.9 MB", "1.1 GB" (units of 1024)."""
    for unit in ("bytes", "KB", "MB"):
        if n < 1024:
            return f"{n:,} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same directory + rename, so readers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions of a new file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def prepare_out_dir(out: str | Path) -> Path:
    """Create `out` and prove it is writable now, before any long work starts."""
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"  # per process: torchrun ranks probe the same folder
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output directory {out} is not writable: {e.strerror}") from None
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    import timm
    import torch
    import torchvision

    from imagenette_lab import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "imagenette_lab": __version__,
    }


def hardware() -> dict[str, Any]:
    import torch

    from imagenette_lab.engine.precision import cpu_name, speed_flags  # lazy: precision imports utils

    if torch.cuda.is_available():
        device = f"cuda:0 {torch.cuda.get_device_name(0)}"
    else:
        device = "cpu"
    return {
        "device": device,
        "cpu": cpu_name(),
        "cpu_flags": speed_flags(),  # times mean little without them: bf16 is fast only with AMX/AVX512-BF16
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def peak_rss_mib(children: bool = False) -> float | None:
    """Peak resident memory (MiB, file-backed pages included) of this process, or of its largest
    finished child process; None where getrusage is unavailable. On Linux a child forked from this
    process starts from this process's peak (seen: a 3.9 GiB "child" after a run with no workers),
    so the children's figure is an upper bound, not the workers' own memory."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    kib = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF).ru_maxrss
    return round(kib / (1 << 20 if platform.system() == "Darwin" else 1024), 1)  # macOS reports bytes


def write_run_json(
    out_dir: str | Path, kind: str, name: str, started: float, **extra: Any
) -> dict[str, Any]:
    """Mark a stage complete (run.json written last); the schema lives in `runrecord`."""
    from imagenette_lab.runrecord import write_run_json as write

    return write(out_dir, kind, name, started, **extra)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def safe_torch_load(path: str | Path, what: str = "checkpoint") -> Any:
    """`torch.load(weights_only=True)` on the CPU with one-line errors: missing, damaged, or refused.

    A file that references Python callables could run code when unpickled, so it is refused, and the
    message says how to convert it if the user trusts its source.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        culprit = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln), "")
        if not culprit:  # random bytes also fail the safe unpickler ("Unsupported operand"): damage
            raise UserError(f"{what} {path} is corrupt or truncated (not a readable torch file)") from None
        raise UserError(
            f"{what} {path} was refused: it contains Python objects that could run code when loaded"
            f" ({culprit}); imagenette-lab only reads tensors and plain values. Only if "
            "you trust its source: load it with torch.load(weights_only=False) and save model.state_dict()"
        ) from None
    except Exception as e:  # zip/EOF/format errors all mean: unusable file
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"{what} {path} is corrupt or truncated ({reason})") from None
