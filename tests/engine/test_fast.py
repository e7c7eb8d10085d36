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
    windows = []  # the best of three windows: on a shared VM, one window now and then pays ~8-16k faults
    for _ in range(3):  # per step (seen 1 run in 6) while the others pay ~1.6k: not what this checks
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            step()
        windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
    assert min(windows) < 8000, windows  # fresh pages every step would be ~32,800 faults of 4 KiB


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


def _graph(fn) -> str:  # type: ignore[no-untyped-def]
    """The names of an autograd graph's nodes."""
    return " ".join([fn.name()] + [_graph(f) for f, _ in fn.next_functions if f is not None])


@pytest.mark.parametrize("channels_last", [True, False])
def test_small_input_depthwise_grads_match_and_switch_by_shape(channels_last: bool,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """small_input_depthwise_grads: where a depthwise conv's input is smaller than its kernel (oneDNN's
    weight gradient is 5-20x slower there), the same values and gradients through the tap sums;
    everywhere else the plain Conv2d path (engine/cpu_kernels.py's kernel, which would take the
    channels_last case, is off here: tests/engine/test_cpu_kernels.py)."""
    from imagenette_lab.engine import cpu_kernels
    from imagenette_lab.engine.fast import small_input_depthwise_grads

    monkeypatch.setattr(cpu_kernels, "library", lambda: None)

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for c, h, k, s, bias in [(6, 3, 5, 1, False), (6, 4, 5, 2, True), (4, 2, 3, 1, False), (4, 7, 5, 1, False)]:
        torch.manual_seed(0)
        plain = torch.nn.Conv2d(c, c, k, s, k // 2, groups=c, bias=bias).to(memory_format=fmt)
        fast = torch.nn.Conv2d(c, c, k, s, k // 2, groups=c, bias=bias).to(memory_format=fmt)
        fast.load_state_dict(plain.state_dict())
        keys = list(fast.state_dict())
        assert small_input_depthwise_grads(fast) == 1 and small_input_depthwise_grads(fast) == 0
        assert list(fast.state_dict()) == keys
        x = torch.randn(3, c, h, h).contiguous(memory_format=fmt)
        outs = []
        for m in (plain, fast):
            xi = x.clone().requires_grad_()
            y = m(xi)
            y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
            outs.append((y.detach(), xi.grad, *(p.grad for p in m.parameters()), y.grad_fn))
        for a, b in zip(outs[0][:-1], outs[1][:-1]):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        assert fast.weight.grad.stride() == fast.weight.stride()  # DDP's gradient buckets expect this
        assert ("SmallInputDepthwise" in _graph(outs[1][-1])) == (h < k), (h, k, _graph(outs[1][-1]))
        assert "SmallInputDepthwise" not in _graph(outs[0][-1])  # without the switch: oneDNN's backward
        with torch.no_grad():
            torch.testing.assert_close(fast(x), plain(x))


def test_train_task_switches_small_input_depthwise_convs_under_both_precisions() -> None:
    from imagenette_lab.engine.task import TrainTask

    for amp in ("off", "bf16"):
        net, ref = (torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 8, 5, padding=2, groups=8),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()) for _ in range(2))
        ref.load_state_dict(net.state_dict())
        task = TrainTask(net, amp=amp, device="cpu")
        assert type(net[0]) is torch.nn.Conv2d and "SmallInputDepthwise" in str(type(net[1]).__mro__)
        x, t = torch.randn(2, 3, 3, 3), torch.tensor([1, 2])
        task(x, t)[0].backward()  # under bf16: fp32_depthwise runs the switched conv in fp32
        if amp == "off":
            torch.nn.functional.cross_entropy(ref(x), t).backward()
            torch.testing.assert_close(net[1].weight.grad, ref[1].weight.grad)
        assert net[1].weight.grad is not None and net[1].weight.grad.isfinite().all()


def _saved_bytes(fn) -> int:  # type: ignore[no-untyped-def]
    """Bytes of the tensors autograd keeps for backward while `fn()` runs (each storage once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("channels_last", [True, False])
def test_fused_bn_silu_matches_the_pair_and_keeps_less(channels_last: bool) -> None:
    """fused_bn_silu: the same outputs, gradients and running statistics as BatchNorm2d + SiLU (in
    place, as torchvision builds them) in training and eval, one activation less kept for backward."""
    from imagenette_lab.engine.fast import fused_bn_silu

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for momentum in (0.1, None):
        torch.manual_seed(0)
        plain, fast = (torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, bias=False),
                                           torch.nn.BatchNorm2d(6, momentum=momentum),
                                           torch.nn.SiLU(inplace=True)).to(memory_format=fmt) for _ in range(2))
        with torch.no_grad():
            plain[1].weight.uniform_(0.5, 1.5), plain[1].bias.uniform_(-1, 1)
        fast.load_state_dict(plain.state_dict())
        keys = list(fast.state_dict())
        assert fused_bn_silu(fast) == 1 and fused_bn_silu(fast) == 0
        assert type(fast[2]) is torch.nn.Identity and list(fast.state_dict()) == keys
        x = torch.randn(4, 3, 9, 9).contiguous(memory_format=fmt)
        outs, kept = [], []
        for m in (plain, fast):
            for _ in range(2):  # two steps: running statistics and num_batches_tracked move alike
                m.zero_grad()
                y = m(x)
                y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
            kept.append(_saved_bytes(lambda m=m: m(x)))
            outs.append((y.detach(), *(p.grad for p in m.parameters()), *m[1].buffers(), y.grad_fn))
        for a, b in zip(outs[0][:-1], outs[1][:-1]):  # gradients are sums over 196 pixels, in another order
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))
        assert "BatchNormSiLU" in _graph(outs[1][-1]) and "BatchNormSiLU" not in _graph(outs[0][-1])
        assert outs[1][0].is_contiguous(memory_format=fmt) and fast[0].weight.grad.is_contiguous(memory_format=fmt)
        # kept: conv input + weight, BN input + statistics; the pair also keeps SiLU's input (4*6*7*7 floats)
        assert kept[0] - kept[1] >= 4 * 6 * 7 * 7 * 4, kept
        plain.eval(), fast.eval()
        with torch.no_grad():
            torch.testing.assert_close(fast(x), plain(x))


def test_train_task_fuses_bn_silu_of_efficientnet() -> None:
    from imagenette_lab.engine.task import TrainTask
    from imagenette_lab.models.factory import create_classifier

    net = create_classifier("efficientnet_b0", 10, head="linear")
    TrainTask(net, amp="off", device="cpu")
    names = [type(m).__name__ for m in net.modules()]
    assert names.count("_BatchNormSiLU") == 33 and "SiLU" in names  # the SE blocks' SiLU has no BatchNorm


@pytest.mark.parametrize("amp", [False, True])
def test_fused_squeeze_excitation_matches_and_writes_one_pass_fewer(amp: bool) -> None:
    """fused_squeeze_excitation: the same output and gradients (input and all four parameters) as
    torchvision's SqueezeExcitation, in fp32 and under bf16 autocast, without autograd's separate
    full-size add of the pooled path's gradient; eval and frozen blocks run the plain forward."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torchvision.ops import SqueezeExcitation

    from imagenette_lab.engine.fast import channels_last_pool_grads, fused_squeeze_excitation

    class FullSizeAdds(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func.overloadpacket in (torch.ops.aten.add, torch.ops.aten.add_):
                self.n += sum(isinstance(a, torch.Tensor) and a.dim() == 4 and a.shape[2] > 1 for a in args) == 2
            return func(*args, **(kwargs or {}))

    def run(se: torch.nn.Module) -> tuple[list[torch.Tensor], int]:
        torch.manual_seed(0)
        x = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
        se.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = se(x)
        g = torch.linspace(-1, 1, out.numel()).view_as(out).contiguous(memory_format=torch.channels_last)
        with FullSizeAdds() as mode:
            out.backward(g.to(out.dtype))
        assert x.grad.is_contiguous(memory_format=torch.channels_last)
        return [out.detach(), x.grad, *(p.grad for p in se.parameters())], mode.n

    torch.manual_seed(0)
    se = SqueezeExcitation(8, 2, activation=torch.nn.SiLU)  # as in torchvision's EfficientNet
    channels_last_pool_grads(se)  # as TrainTask applies it first
    keys = list(se.state_dict())
    plain, plain_adds = run(se)
    assert fused_squeeze_excitation(se) == 1 and fused_squeeze_excitation(se) == 0
    assert list(se.state_dict()) == keys
    fast, fast_adds = run(se)
    assert plain_adds >= 1 and fast_adds == 0, (plain_adds, fast_adds)
    tol = {"rtol": 2e-2, "atol": 2e-2} if amp else {"rtol": 1e-5, "atol": 1e-6}  # bf16 keeps 8 bits
    for a, b in zip(plain, fast):
        torch.testing.assert_close(b.float(), a.float(), **tol)

    x = torch.randn(2, 8, 5, 5)
    se.eval()
    with torch.no_grad():
        assert se(x).grad_fn is None
    se.train()
    se.fc1.weight.requires_grad_(False)  # a frozen block keeps autograd's own path
    assert "SqueezeExcitationFn" not in se(x.requires_grad_()).grad_fn.name()


def test_squeeze_excitation_under_bf16_makes_no_full_size_copies() -> None:
    """Under bf16 autocast the fused block's pool (forward) and its scale gradient (backward) sum in
    fp32 without first copying the activation to fp32 (without those copies a bf16 B0 step is ~10 %
    faster on a 2-core Zen 5)."""
    from torch.profiler import ProfilerActivity, profile
    from torchvision.ops import SqueezeExcitation

    from imagenette_lab.engine.fast import channels_last_pool_grads, fused_squeeze_excitation

    se = SqueezeExcitation(16, 4, activation=torch.nn.SiLU)
    channels_last_pool_grads(se)
    fused_squeeze_excitation(se)
    x = torch.randn(4, 16, 8, 8).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = se(x)
        out.backward(torch.ones_like(out))
    assert "SqueezeExcitationFn" in out.grad_fn.name()
    copies = [e.name for e in prof.events() if e.name in ("aten::_to_copy", "aten::copy_")
              and e.input_shapes and list(e.input_shapes[0]) == [4, 16, 8, 8]]
    assert copies == []


def test_train_task_fuses_the_squeeze_excitation_of_efficientnet() -> None:
    from imagenette_lab.engine.task import TrainTask
    from imagenette_lab.models.factory import create_classifier

    net = create_classifier("efficientnet_b0", 10, head="linear")
    TrainTask(net, amp="off", device="cpu")
    names = [type(m).__name__ for m in net.modules()]
    assert names.count("_FusedSqueezeExcitation") == 16 and names.count("_FusedMBConv") == 16
