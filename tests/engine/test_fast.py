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


def test_global_pool_gradients_stay_channels_last() -> None:
    """channels_last_pool_grads: the same values and gradients as AdaptiveAvgPool2d(1), but the
    backward of a squeeze-excitation block (x * f(pool(x))) no longer adds an NCHW gradient to a
    channels_last one (that strided add cost ~15 % of a bf16 B0 step)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torchvision.ops import SqueezeExcitation

    from imagenette_lab.engine.fast import channels_last_pool_grads
    from imagenette_lab.engine.task import TrainTask

    class MixedLayoutAdds(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            ts = [a for a in args if isinstance(a, torch.Tensor) and a.dim() == 4 and a.shape[2] > 1]
            if func.overloadpacket in (torch.ops.aten.add, torch.ops.aten.add_) and len(ts) == 2:
                self.n += {t.is_contiguous() for t in ts} == {True, False} and all(  # dense NCHW + dense NHWC
                    t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last) for t in ts)
            return func(*args, **(kwargs or {}))

    def grads(se: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, int]:
        torch.manual_seed(0)
        x = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
        out = se(x)
        g = torch.linspace(0, 1, out.numel()).view_as(out).contiguous(memory_format=torch.channels_last)
        with MixedLayoutAdds() as mode:  # an upstream gradient in channels_last, as a conv's would be
            out.backward(g)
        return out.detach(), x.grad, mode.n

    torch.manual_seed(0)
    se = SqueezeExcitation(8, 2)
    plain = grads(se)
    keys = list(se.state_dict())
    assert plain[2] > 0  # without the switch: the mixed-layout add this removes
    assert channels_last_pool_grads(se) == 1 and channels_last_pool_grads(se) == 0
    fast = grads(se)
    assert fast[2] == 0 and list(se.state_dict()) == keys
    torch.testing.assert_close(fast[0], plain[0])
    torch.testing.assert_close(fast[1], plain[1])
    assert fast[1].is_contiguous(memory_format=torch.channels_last)

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.AdaptiveAvgPool2d(1))
    TrainTask(net, amp="off", device="cpu")  # CPU training switches them, as train runs it
    assert type(net[1]).__name__ == "_SumPool"
