"""engine/fast.py: glibc keeps freed memory for reuse, so a training step does not page-fault its
activations in again (measured: 100-225k minor faults per EfficientNet-B0 step before)."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from imagenette_lab.engine.fast import progressive_size, reuse_freed_memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_reused_without_page_faults() -> None:
    assert reuse_freed_memory() and reuse_freed_memory()  # idempotent

    def step() -> None:  # a training step in miniature: large temporaries allocated and freed
        a, b = torch.ones(16 << 20), torch.ones(8 << 20)  # 64 + 32 MiB: glibc would mmap them
        c = a[: 8 << 20] + b
        del a, b, c

    step()
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    assert per_step < 8000, per_step  # fresh pages every step would be ~32,800 faults of 4 KiB


def test_progressive_sizes_grow_to_the_train_size() -> None:
    sizes = [progressive_size(128, 64, 0.5, e, 16) for e in range(1, 17)]
    assert sizes == [64, 64, 80, 80, 96, 96, 112, 112] + [128] * 8
    assert progressive_size(128, 0, 0.5, 1, 16) == 128
