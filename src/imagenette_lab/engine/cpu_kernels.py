"""CPU training kernels in C++ (cpu_kernels.cpp) for channels_last fp32 or bf16 activations:
silu(batch_norm(x)) fused, alone or with the squeeze-excitation after it, and depthwise convolutions.

Hand-written because nothing maintained does these well on a CPU: eager runs BatchNorm and SiLU as
separate passes, inductor's fused pair was slower than eager here (56 vs 35 ms, bf16, 64 x 96 x 64 x
64, 2-core Zen 4), and oneDNN's depthwise backward is slow (bf16: 4-15x fp32; fp32 weight gradients
on small maps at ~6 GFLOP/s). The file is compiled on first use with the system's C++ compiler for
this CPU (`-march=native`, ~2 s) into `kernels/` beside the data caches; on a CPU without AVX-512,
without a compiler, or if the build fails, training keeps the eager ops (one log line).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from imagenette_lab.data.index_store import user_cache_base

log = logging.getLogger(__name__)

_SRC = Path(__file__).with_name("cpu_kernels.cpp")
_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-shared", "-fPIC")


def _cache_dir() -> Path:
    return user_cache_base() / "kernels"  # beside the data caches and precision.json


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel (built once per source, compiler and CPU), or None where it cannot be built
    or would be slower than the eager ops."""
    if os.environ.get("IMAGENETTE_LAB_NO_KERNELS", "") not in ("", "0"):
        return None
    from imagenette_lab.engine.precision import cpu_flags  # lazy: precision imports this module

    flags = cpu_flags()
    if "avx512f" not in flags:
        # Faster only where AVX-512 holds their 16-float blocks: built for AVX2 (oneDNN limited to AVX2
        # on a Zen 5) they ran at 0.4-0.9x of the eager ops, a B0 step at ~0.65x. Others not measured.
        log.info("no AVX-512: training keeps the eager ops (engine/cpu_kernels.py)")
        return None
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        log.info("no C++ compiler: training keeps the eager ops (engine/cpu_kernels.py)")
        return None
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256("\0".join([_SRC.read_text(), version, *_FLAGS, *sorted(flags)]).encode()).hexdigest()
        path = _cache_dir() / f"cpu_kernels-{key[:16]}.so"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # built aside, renamed: never half a file
                out = Path(tmp) / path.name
                subprocess.run([cxx, *_FLAGS, str(_SRC), "-o", str(out)], check=True, capture_output=True,
                               text=True, timeout=300)
                os.replace(out, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or e
        log.warning("the CPU training kernels could not be built, the eager ops stay: %s", str(detail).strip()[:300])
        return None
    p, i64, f32, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
    lib.bn_silu_forward.argtypes = [i32, i32, p, i64, i64, p, p, f32, p, p, p]
    lib.bn_silu_backward.argtypes = [i32, i32, p, p, i64, i64, p, p, p, p, f32, p, p, p]
    lib.dw_conv_forward.argtypes = [i32, i32, p, i64, i64, i64, i64, i32, i32, i32, p, p, i64, i64]
    lib.dw_conv_backward.argtypes = [i32, i32, p, p, i64, i64, i64, i64, i32, i32, i32, p, i64, i64, p, p]
    lib.bn_silu_pool.argtypes = [i32, i32, p, i64, i64, i64, p, p, f32, p, p, p, p]
    lib.bn_silu_excite.argtypes = [i32, i32, i64, i64, i64, p, p]
    lib.bn_silu_excite_grad.argtypes = [i32, i32, p, p, i64, i64, i64, p, p, p, p, f32, p]
    lib.bn_silu_excite_backward.argtypes = [i32, i32, p, p, i64, i64, i64, p, p, p, p, f32, p, p, p, p, p]
    for f in (lib.bn_silu_forward, lib.bn_silu_backward, lib.dw_conv_forward, lib.dw_conv_backward,
              lib.bn_silu_pool, lib.bn_silu_excite, lib.bn_silu_excite_grad, lib.bn_silu_excite_backward):
        f.restype = None
    return lib


def supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the kernels take this input: CPU, 4-d channels_last fp32/bf16, fp32 parameters."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.dtype in (torch.float32, torch.bfloat16)
            and weight.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
            and x.numel() > 0 and library() is not None)


def supports_depthwise(conv: torch.nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether `DepthwiseConvFn` computes this depthwise conv: square odd kernel up to 7x7 (the C++
    side's tap lists hold 64) with 'same' zero padding, equal strides, no dilation or bias, and an
    input `supports` takes."""
    k, s = conv.kernel_size, conv.stride
    return (k[0] == k[1] and k[0] % 2 == 1 and k[0] <= 7 and s[0] == s[1] and conv.padding == (k[0] // 2,) * 2
            and conv.dilation == (1, 1) and conv.bias is None and conv.padding_mode == "zeros"
            and conv.groups == conv.in_channels == conv.out_channels and supports(x, conv.weight))


class BatchNormSiLUFn(torch.autograd.Function):
    """silu(batch_norm(x, training=True)) that updates the running statistics as BatchNorm2d does
    (unbiased variance) and keeps only x and the per-channel mean and variance for backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):  # type: ignore[override]
        n, c, h, w = x.shape
        y = torch.empty_like(x)  # channels_last, as x
        mean, var = torch.empty(c), torch.empty(c)
        weight, bias = weight.contiguous(), bias.contiguous()
        library().bn_silu_forward(x.dtype == torch.bfloat16, torch.get_num_threads(), x.data_ptr(), n * h * w, c,
                                  weight.data_ptr(), bias.data_ptr(), eps, mean.data_ptr(), var.data_ptr(),
                                  y.data_ptr())
        _running_stats(running_mean, running_var, mean, var, momentum, n * h * w)
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight, bias, mean, var = ctx.saved_tensors
        n, c, h, w = x.shape
        g = grad.to(x.dtype).contiguous(memory_format=torch.channels_last)
        gx, gw, gb = torch.empty_like(x), torch.empty(c), torch.empty(c)
        library().bn_silu_backward(x.dtype == torch.bfloat16, torch.get_num_threads(), x.data_ptr(), g.data_ptr(),
                                   n * h * w, c, weight.data_ptr(), bias.data_ptr(), mean.data_ptr(),
                                   var.data_ptr(), ctx.eps, gx.data_ptr(), gw.data_ptr(), gb.data_ptr())
        return gx, gw, gb, None, None, None, None


def _running_stats(running_mean, running_var, mean, var, momentum, rows: int) -> None:
    with torch.no_grad():
        running_mean.lerp_(mean, momentum)
        running_var.lerp_(var * (rows / (rows - 1)), momentum)  # unbiased, as BatchNorm2d


class BatchNormSiLUExciteFn(torch.autograd.Function):
    """y * excite(mean(y)) for y = silu(batch_norm(x, training=True)): a squeeze-excitation block after
    BatchNorm + SiLU (EfficientNet's depthwise stage), keeping only x for backward. Full-size reads and
    writes: 3 + 2 forward (y pooled as it is written, then scaled in place) and 6 + 2 backward, where the
    two apart take 4 + 2 and 8 + 4. `excite` maps the pooled N x C map to the N x C scale through `params`
    and is recomputed in backward under the forward's autocast state; running statistics update as in
    `BatchNormSiLUFn`."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, excite,  # type: ignore[override]
                *params):
        n, c, h, w = x.shape
        mean, var, pooled = torch.empty(c), torch.empty(c), torch.empty(n, c)
        weight, bias = weight.contiguous(), bias.contiguous()
        bf16, threads = x.dtype == torch.bfloat16, torch.get_num_threads()
        out = torch.empty_like(x)  # y, then y * e in place
        library().bn_silu_pool(bf16, threads, x.data_ptr(), n, h * w, c, weight.data_ptr(), bias.data_ptr(), eps,
                               mean.data_ptr(), var.data_ptr(), pooled.data_ptr(), out.data_ptr())
        _running_stats(running_mean, running_var, mean, var, momentum, n * h * w)
        e = excite(pooled).float().contiguous()  # rounded as the module's own scale would be
        library().bn_silu_excite(bf16, threads, n, h * w, c, e.data_ptr(), out.data_ptr())
        ctx.save_for_backward(x, weight, bias, mean, var, pooled)
        ctx.eps, ctx.excite, ctx.params = eps, excite, params
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):  # type: ignore[override]
        x, weight, bias, mean, var, pooled = ctx.saved_tensors
        n, c, h, w = x.shape
        bf16, threads = x.dtype == torch.bfloat16, torch.get_num_threads()
        g = grad.to(x.dtype).contiguous(memory_format=torch.channels_last)
        with torch.enable_grad():
            p = pooled.detach().requires_grad_()
            e = ctx.excite(p)
        ge = torch.empty(n, c)
        library().bn_silu_excite_grad(bf16, threads, x.data_ptr(), g.data_ptr(), n, h * w, c, weight.data_ptr(),
                                      bias.data_ptr(), mean.data_ptr(), var.data_ptr(), ctx.eps, ge.data_ptr())
        g_pooled, *g_params = torch.autograd.grad(e, (p, *ctx.params), ge.to(e.dtype))
        gp = (g_pooled.float() / (h * w)).contiguous()
        e32 = e.detach().float().contiguous()
        gx, gw, gb = torch.empty_like(x), torch.empty(c), torch.empty(c)
        library().bn_silu_excite_backward(bf16, threads, x.data_ptr(), g.data_ptr(), n, h * w, c, weight.data_ptr(),
                                          bias.data_ptr(), mean.data_ptr(), var.data_ptr(), ctx.eps, e32.data_ptr(),
                                          gp.data_ptr(), gx.data_ptr(), gw.data_ptr(), gb.data_ptr())
        return (gx, gw, gb, None, None, None, None, None, *g_params)


class DepthwiseConvFn(torch.autograd.Function):
    """A depthwise conv2d (see `supports_depthwise`) whose output and input gradient have x's dtype
    and whose weight gradient is fp32, all accumulated in fp32; keeps x for backward."""

    @staticmethod
    def forward(ctx, x, weight, stride):  # type: ignore[override]
        n, c, h, w = x.shape
        k = weight.shape[-1]
        oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1  # 'same' padding k // 2
        taps = weight.detach().reshape(c, k * k).t().contiguous()  # [k*k, c]
        y = torch.empty((n, c, oh, ow), dtype=x.dtype, memory_format=torch.channels_last)
        library().dw_conv_forward(x.dtype == torch.bfloat16, torch.get_num_threads(), x.data_ptr(), n, h, w, c, k,
                                  stride, k // 2, taps.data_ptr(), y.data_ptr(), oh, ow)
        ctx.save_for_backward(x, taps)
        ctx.stride, ctx.weight_like = stride, weight.detach()
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, taps = ctx.saved_tensors
        n, c, h, w = x.shape
        k = ctx.weight_like.shape[-1]
        g = grad.to(x.dtype).contiguous(memory_format=torch.channels_last)
        gx, gtaps = torch.empty_like(x), torch.empty(k * k, c)
        library().dw_conv_backward(x.dtype == torch.bfloat16, torch.get_num_threads(), x.data_ptr(), g.data_ptr(),
                                   n, h, w, c, k, ctx.stride, k // 2, taps.data_ptr(), g.shape[2], g.shape[3],
                                   gx.data_ptr(), gtaps.data_ptr())
        gw = torch.empty_like(ctx.weight_like)  # the weight's strides, as DDP's gradient buckets expect
        gw.copy_(gtaps.t().reshape(gw.shape))
        return gx, gw, None
