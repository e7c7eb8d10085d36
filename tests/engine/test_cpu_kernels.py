"""engine/cpu_kernels.py: the C++ BatchNorm + SiLU and depthwise-convolution kernels against an fp64
reference, how the training modules pick them, and the fallback where they cannot be built."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch.nn import functional as F

from imagenette_lab.engine import cpu_kernels, precision
from imagenette_lab.engine.fast import cpu_training_rewrites

needs_kernels = pytest.mark.skipif(shutil.which("g++") is None or cpu_kernels.library() is None,
                                   reason="no C++ compiler")
CL = torch.channels_last
TOL = {torch.float32: 2e-6, torch.bfloat16: 8e-3}  # relative to the reference's largest value


def _close(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    err = float((got.detach().double() - ref.detach()).abs().max() / ref.detach().abs().max())
    assert err < TOL[dtype], err


def _graph_names(t: torch.Tensor) -> set[str]:
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            todo += [f for f, _ in fn.next_functions]
    return {fn.name() for fn in seen}


def _depthwise(c: int, k: int, s: int) -> torch.nn.Conv2d:
    conv = torch.nn.Conv2d(c, c, k, s, k // 2, groups=c, bias=False).to(memory_format=CL)
    cpu_training_rewrites(torch.nn.Sequential(conv))
    return conv


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4, 8, 5, 3), (2, 80, 4, 4), (3, 40, 9, 7)])  # 80: 64 + 16; 40: 32 + 8
def test_bn_silu_kernel_matches_fp64(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = (torch.randn(shape) * 2 + 3).to(dtype).contiguous(memory_format=CL)  # an offset mean: shifted sums
    g = torch.randn(shape).to(dtype).contiguous(memory_format=CL)
    seq = torch.nn.Sequential(torch.nn.BatchNorm2d(shape[1]), torch.nn.SiLU())
    with torch.no_grad():
        seq[0].weight.uniform_(0.5, 1.5), seq[0].bias.normal_()
    ref_bn = torch.nn.BatchNorm2d(shape[1]).double()
    ref_bn.load_state_dict(seq[0].state_dict())
    cpu_training_rewrites(seq)
    xk, xr = x.clone().requires_grad_(), x.double().requires_grad_()
    y = seq(xk)
    y.backward(g)
    yr = F.silu(ref_bn(xr))
    yr.backward(g.double())
    assert type(y.grad_fn).__name__ == "BatchNormSiLUFnBackward"
    assert y.dtype == dtype and y.is_contiguous(memory_format=CL)
    _close(y, yr, dtype)
    _close(xk.grad, xr.grad, dtype)
    for p, r in zip(seq[0].parameters(), ref_bn.parameters()):
        _close(p.grad, r.grad, torch.float32)  # fp32 sums, even from bf16 activations
    for name in ("running_mean", "running_var"):
        _close(getattr(seq[0], name), getattr(ref_bn, name), torch.float32)
    assert int(seq[0].num_batches_tracked) == 1


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("expand,k,s,cin,cout", [(1, 3, 1, 32, 16), (6, 5, 2, 24, 40), (6, 3, 1, 40, 40)])
def test_bn_silu_excite_kernel_matches_fp64(dtype: torch.dtype, expand: int, k: int, s: int, cin: int,
                                            cout: int) -> None:
    """torchvision's MBConv (as in EfficientNet-B0: without expansion, with a stride, with a residual)
    with its depthwise stage's BatchNorm + SiLU and squeeze-excitation through one kernel call: output,
    input and every parameter gradient and the running statistics against the plain block in fp64;
    a frozen excitation or eval mode runs the plain block."""
    import copy

    from torchvision.models.efficientnet import MBConv, MBConvConfig

    torch.manual_seed(0)
    block = MBConv(MBConvConfig(expand, k, s, cin, cout, 1), 0.0, torch.nn.BatchNorm2d).to(memory_format=CL)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_()
    ref = copy.deepcopy(block).double()
    keys = list(block.state_dict())
    cpu_training_rewrites(block)
    assert type(block).__name__ == "_FusedMBConv" and list(block.state_dict()) == keys
    x = torch.randn(4, cin, 12, 10).contiguous(memory_format=CL)
    xk, xr = x.to(dtype, copy=True).requires_grad_(), x.double().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        y = block(xk)
    g = torch.randn(y.shape).contiguous(memory_format=CL)
    y.backward(g.to(y.dtype))
    yr = ref(xr)
    yr.backward(g.double())
    assert "BatchNormSiLUExciteFnBackward" in _graph_names(y)
    assert y.dtype == dtype and y.is_contiguous(memory_format=CL)
    tol = {torch.float32: 2e-6, torch.bfloat16: 3e-2}[dtype]  # bf16: ~1-2 % through four layers
    for got, want in [(y, yr), (xk.grad, xr.grad), *((p.grad, r.grad) for p, r in zip(block.parameters(),
                                                                                      ref.parameters())),
                      *((a, b) for a, b in zip(block.buffers(), ref.buffers()) if a.is_floating_point())]:
        err = float((got.detach().double() - want.detach()).abs().max() / want.detach().abs().max())
        assert err < tol, err
    assert [int(b.num_batches_tracked) for b in block.modules() if isinstance(b, torch.nn.BatchNorm2d)] == [1] * (
        2 + (expand != 1))

    with torch.no_grad():  # eval: the plain block, with the running statistics the kernel kept
        got, want = block.eval()(x), ref.eval()(x.double())
    assert float((got.double() - want).abs().max() / want.abs().max()) < tol
    se = next(m for m in block.modules() if type(m).__name__ == "_FusedSqueezeExcitation")
    se.fc1.weight.requires_grad_(False)  # a frozen excitation: the plain block
    block.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        y2 = block(x.to(dtype, copy=True).requires_grad_())
    assert "BatchNormSiLUExciteFnBackward" not in _graph_names(y2) and "BatchNormSiLUFnBackward" in _graph_names(y2)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("c,hw,k,s", [(8, (7, 5), 3, 1), (8, (7, 5), 3, 2), (16, (6, 6), 5, 2), (80, (4, 4), 5, 1),
                                      (24, (3, 3), 5, 1), (4, (9, 8), 5, 2), (64, (8, 8), 3, 1), (6, (4, 7), 7, 1)])
def test_depthwise_kernel_matches_fp64(dtype: torch.dtype, c: int, hw: tuple[int, int], k: int, s: int) -> None:
    """Kernel sizes 3 and 5 (register-blocked) and 7 (the generic loop), strides 1 and 2, inputs
    smaller than the kernel, channel counts with and without a scalar tail."""
    torch.manual_seed(0)
    conv = _depthwise(c, k, s)
    x = torch.randn(2, c, *hw).to(dtype).contiguous(memory_format=CL)
    xk, xr = x.clone().requires_grad_(), x.double().requires_grad_()
    wr = conv.weight.detach().double().requires_grad_()
    y = conv(xk)
    g = torch.randn(y.shape).to(dtype).contiguous(memory_format=CL)
    y.backward(g)
    yr = F.conv2d(xr, wr, None, s, k // 2, 1, c)
    yr.backward(g.double())
    assert type(y.grad_fn).__name__ == "DepthwiseConvFnBackward" and y.dtype == dtype
    assert y.shape == yr.shape and y.is_contiguous(memory_format=CL)
    _close(y, yr, dtype)
    _close(xk.grad, xr.grad, dtype)
    _close(conv.weight.grad, wr.grad, torch.float32)
    assert conv.weight.grad.dtype == torch.float32 and conv.weight.grad.stride() == conv.weight.stride()


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_stays_nan(dtype: torch.dtype) -> None:
    """A diverged step must show as NaN (bf16 rounding must not turn NaN into a number)."""
    conv = _depthwise(32, 3, 1)
    seq = torch.nn.Sequential(torch.nn.BatchNorm2d(32), torch.nn.SiLU())
    cpu_training_rewrites(seq)
    x = torch.ones(2, 32, 6, 6, dtype=dtype).contiguous(memory_format=CL)
    x[0, 3, 2, 2] = float("nan")
    x.requires_grad_()
    y = conv(x)
    assert type(y.grad_fn).__name__ == "DepthwiseConvFnBackward"
    assert y[0, 3, 1:4, 1:4].isnan().all() and not y[1].isnan().any()
    assert seq(x)[:, 3].isnan().all()  # the channel's statistics are NaN


@needs_kernels
def test_kernels_take_only_what_they_compute() -> None:
    conv = _depthwise(8, 3, 1)
    x = torch.randn(2, 8, 6, 6)
    assert cpu_kernels.supports_depthwise(conv, x.contiguous(memory_format=CL))
    assert not cpu_kernels.supports_depthwise(conv, x)  # NCHW: the plain path
    assert not cpu_kernels.supports_depthwise(conv, x.half().contiguous(memory_format=CL))
    for other in (torch.nn.Conv2d(8, 8, 3, 1, 1, groups=8), torch.nn.Conv2d(8, 8, 3, 1, 0, groups=8, bias=False),
                  torch.nn.Conv2d(8, 8, 3, 1, 2, dilation=2, groups=8, bias=False),
                  torch.nn.Conv2d(8, 8, 9, 2, 4, groups=8, bias=False)):  # 81 taps: more than the kernel holds
        assert not cpu_kernels.supports_depthwise(other, x.contiguous(memory_format=CL))
    with torch.no_grad():  # no autograd: the plain Conv2d, kernel or not
        assert conv(x.contiguous(memory_format=CL)).grad_fn is None
    conv.eval()
    assert type(conv(x.contiguous(memory_format=CL)).grad_fn).__name__ != "DepthwiseConvFnBackward"


def test_without_a_compiler_training_keeps_the_eager_ops(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """No compiler (CXX names none): library() is None, one log line, and the modules train eagerly."""
    monkeypatch.setattr(cpu_kernels, "library", cpu_kernels.library.__wrapped__)  # uncached for this test
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"fpu", "avx2", "avx512f"})
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with caplog.at_level("INFO"):
        assert cpu_kernels.library() is None
    assert "no C++ compiler" in caplog.text
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/g++")  # a compiler, but switched off
    monkeypatch.setenv("IMAGENETTE_LAB_NO_KERNELS", "1")
    assert cpu_kernels.library() is None
    seq = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, 1, 1, groups=4, bias=False), torch.nn.BatchNorm2d(4),
                              torch.nn.SiLU()).to(memory_format=CL)
    cpu_training_rewrites(seq)
    y = seq(torch.randn(2, 4, 5, 5).contiguous(memory_format=CL).requires_grad_())
    y.sum().backward()
    assert "DepthwiseConvFn" not in str(y.grad_fn.next_functions) and seq[0].weight.grad is not None


def test_without_avx512_training_keeps_the_eager_ops(monkeypatch: pytest.MonkeyPatch, tmp_path, caplog) -> None:
    """Built for AVX2 the kernels ran slower than the eager ops, so they are used only with AVX-512."""
    monkeypatch.setattr(cpu_kernels, "library", cpu_kernels.library.__wrapped__)
    monkeypatch.setenv("IMAGENETTE_LAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"fpu", "sse4_2", "avx", "avx2", "fma"})
    with caplog.at_level("INFO"):
        assert cpu_kernels.library() is None
    assert "no AVX-512" in caplog.text and not list(tmp_path.rglob("*.so"))
    conv = _depthwise(8, 3, 1)
    assert not cpu_kernels.supports_depthwise(conv, torch.randn(2, 8, 6, 6).contiguous(memory_format=CL))


@needs_kernels
def test_a_failed_build_keeps_the_eager_ops_and_leaves_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                               caplog) -> None:
    monkeypatch.setattr(cpu_kernels, "library", cpu_kernels.library.__wrapped__)
    monkeypatch.setenv("IMAGENETTE_LAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "_FLAGS", ("-shared", "--no-such-flag"))
    with caplog.at_level("WARNING"):
        assert cpu_kernels.library() is None
    assert "could not be built" in caplog.text
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@needs_kernels
def test_the_build_is_cached_per_source_and_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(cpu_kernels, "library", cpu_kernels.library.__wrapped__)
    monkeypatch.setenv("IMAGENETTE_LAB_CACHE_DIR", str(tmp_path))
    assert cpu_kernels.library() is not None
    built = sorted(tmp_path.rglob("*.so"))
    assert len(built) == 1 and built[0].parent.name == "kernels"
    mtime = built[0].stat().st_mtime_ns
    assert cpu_kernels.library() is not None and built[0].stat().st_mtime_ns == mtime  # reused, not rebuilt
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"another", "cpu", "avx512f"})
    assert cpu_kernels.library() is not None and len(sorted(tmp_path.rglob("*.so"))) == 2
