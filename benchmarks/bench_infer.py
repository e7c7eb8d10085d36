"""Benchmark: inference img/s at 224 px -- a plain fp32 `model(x)` loop at batch 32 vs ours.

baseline  model.eval(); torch.no_grad(); fp32; NCHW; batch 32
ours      imagenette-lab's inference path (engine.evaluate.run_inference's settings): inference_mode,
          channels_last, Conv+BN folded (torch.fx fuse, eval only), in two bf16 modes: autocast per
          `amp_dtype` (bf16 activations), and fp32 tensors with oneDNN's implicit bf16 math in conv/matmul
          (torch.backends.mkldnn.fp32_precision = "bf16"); `--compile` adds torch.compile
onnx      the same fp32 model exported as `imagenette-lab export` does (torch.onnx, dynamo) and run by
          onnxruntime's CPU provider with torch's thread count (the `predict` path for .onnx files)
onnx_int8 that file quantized as `imagenette-lab export --int8` does (quantize.py: onnxruntime static
          int8, calibrated on --calib-images of the root's train split, never the timed val images)

For each model: the same preprocessed val images for both; `--warmup` batches discarded, then the
median img/s of `--repeats` timed passes; top-1 agreement of ours with the fp32 baseline on those
images (goal >= 99 %); achieved GFLOP/s (FLOPs per image from torch.utils.flop_counter.FlopCounterMode
x img/s) beside this machine's measured GFLOP/s of a large product in fp32 and bf16 (torch.matmul and a
oneDNN 1x1 convolution), i.e. the distance to the hardware limit. Baseline and modes take turns pass by
pass (the machine drifts). Models without offline ImageNet weights run with random weights (marked in the JSON;
their agreement is then a weaker check).

    python benchmarks/bench_infer.py --quick
    python benchmarks/bench_infer.py                       # efficientnet_b0, efficientnet_lite0, resnet50
    python benchmarks/bench_infer.py --models runs/my_run  # a model trained here, from its run directory
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "imagenette2-224"
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))

from benchmarks.common import cpu_info, peak_rss_mib, write_result  # noqa: E402


def peak_gflops(dtype, n: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of an n x n x n product two ways: torch.matmul (MKL on x86) and a 1x1 convolution over n
    channels_last pixels (oneDNN, which runs the models' convolutions); the larger is the limit to
    compare with (fp32 on a 2-core AVX2 EPYC: 125-165 GFLOP/s either way, drifting with the host)."""
    import torch
    import torch.nn.functional as F

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    x = torch.randn(1, n, n // 32, 32).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1).to(dtype)
    out = {}
    for name, fn in (("matmul", lambda: a @ b), ("conv1x1", lambda: F.conv2d(x, w))):
        for _ in range(2):
            fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = round(2 * n**3 / statistics.median(times) / 1e9, 1)
    return out


def load_images(root: Path, n: int, size: int = 224, split: str = "val"):
    """(N, 3, size, size) float32 images of `split`, eval transform (resize 256, centre crop 224)."""
    import torch

    from imagenette_lab.data.dataset import index_split
    from imagenette_lab.data.sources import make_dataset
    from imagenette_lab.data.transforms import default_data_cfg, eval_transform

    index = index_split(root, split)
    per_class = max(n // len(index.classes) + 1, 1)
    ds = make_dataset(index.subset(per_class, 0), eval_transform(default_data_cfg(size)))
    xs = [item[0] for item in (ds[i] for i in range(len(ds))) if item is not None]
    return torch.stack(xs[:n])


def build(name: str):
    """(model, weights kind) for a model name (ImageNet weights; random offline) or a `train` run directory /
    checkpoint (weights trained here: agreement on real margins where no ImageNet weights are offline)."""
    from imagenette_lab.models.factory import create_imagenet_model

    if Path(name).exists():
        from imagenette_lab.predict import load_predictor

        return load_predictor(name).model, "trained"
    try:
        return create_imagenet_model(name, weights="DEFAULT"), "imagenet"
    except Exception as e:  # noqa: BLE001 - offline: no download cache
        print(f"  {name}: no ImageNet weights offline ({str(e).splitlines()[0][:80]}); random weights")
        import torch

        torch.manual_seed(0)  # the same random model in every run
        return create_imagenet_model(name, weights=None), "random"


def ours_model(model, compile_: bool):
    """Eval-only rewrite: Conv+BN folded (fewer memory passes), channels_last, optionally compiled."""
    import copy

    import torch

    m = copy.deepcopy(model).eval()
    try:
        from torch.fx.experimental.optimization import fuse

        m = fuse(m)
    except Exception as e:  # noqa: BLE001 - not fx-traceable: keep the unfused module
        print(f"  (Conv+BN folding skipped: {type(e).__name__})")
    m = m.to(memory_format=torch.channels_last)
    return torch.compile(m) if compile_ else m


def onnx_model(model, tmp: Path):
    """`model` exported to ONNX (fp32, export.export_onnx) and loaded in onnxruntime."""
    from imagenette_lab.export import export_onnx
    from imagenette_lab.onnx_backend import OnnxClassifier

    path = tmp / "model.onnx"
    export_onnx(model, {"preprocessing": {"crop": 224}}, path)
    return OnnxClassifier(path)


def onnx_int8_model(fp32: Path, calib):
    """The fp32 ONNX file quantized to int8 (quantize.py, as `export --int8`), run by onnxruntime."""
    from imagenette_lab.onnx_backend import OnnxClassifier
    from imagenette_lab.quantize import quantize_onnx

    out = fp32.with_name("model_int8.onnx")
    quantize_onnx(fp32, out, (calib[i: i + 32] for i in range(0, len(calib), 32)))
    return OnnxClassifier(out)


def interleaved(fns: dict, x, batch: int, warmup: int, repeats: int) -> dict[str, list[float]]:
    """img/s of each of `fns` per pass over `x`, the passes taken in turn (baseline, mode 1, ...,
    baseline, ...): this shared machine's speed drifts by up to a third within minutes, and timing one
    after the other would hand that drift to the ratio."""
    import torch

    batches = [x[i: i + batch] for i in range(0, len(x) - batch + 1, batch)] or [x]
    rates: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            for b in batches[:warmup]:
                fn(b)
        for _ in range(repeats):
            for k, fn in fns.items():
                t = time.perf_counter()
                for b in batches:
                    fn(b)
                rates[k].append(sum(len(b) for b in batches) / (time.perf_counter() - t))
    return rates


def bench_model(name: str, x, calib, args, tmp: Path) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from imagenette_lab.engine.evaluate import amp_dtype
    from imagenette_lab.engine.precision import describe

    model, weights = build(name)
    model.eval()
    dtype = amp_dtype(torch.device("cpu"), args.amp)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x[:1])
    flops = fc.get_total_flops()  # per image (counts 2 FLOPs per multiply-add)
    with torch.inference_mode():
        ref = torch.cat([model(x[i: i + 32]).argmax(1) for i in range(0, len(x), 32)])
    fast = ours_model(model, args.compile)
    ort_model = ort8 = None
    if {"onnx", "onnx_int8"} & set(args.modes):
        ort_model = onnx_model(model, Path(tempfile.mkdtemp(dir=tmp)))
    if "onnx_int8" in args.modes:
        ort8 = onnx_int8_model(ort_model.path, calib)

    def ours(b, mode):
        if mode == "onnx":
            return ort_model(b)
        if mode == "onnx_int8":
            return ort8(b)
        b = b.contiguous(memory_format=torch.channels_last)
        if mode == "bf16_autocast" and dtype is not None:
            with torch.autocast("cpu", dtype=dtype):
                return fast(b)
        if mode != "bf16_fpmath":
            return fast(b)
        # fp32 tensors, oneDNN's implicit bf16 math in conv/matmul (closer to fp32)
        old = torch.backends.mkldnn.fp32_precision
        torch.backends.mkldnn.fp32_precision = "bf16"
        try:
            return fast(b)
        finally:
            torch.backends.mkldnn.fp32_precision = old

    fns = {"baseline": lambda b: model(b)} | {m: (lambda b, m=m: ours(b, m)) for m in args.modes}
    rates = interleaved(fns, x, args.batch_size, args.warmup, args.repeats)
    base_rate, base_reps = statistics.median(rates["baseline"]), rates["baseline"]
    r = {"weights": weights, "gflop_per_image": round(flops / 1e9, 3), "n_images": len(x),
         "baseline_img_per_s": round(base_rate, 2), "baseline_repeats": [round(v, 2) for v in base_reps],
         "baseline_gflops": round(flops * base_rate / 1e9, 1), "ours": {}}
    for mode in args.modes:
        rate, reps = statistics.median(rates[mode]), rates[mode]
        with torch.inference_mode():
            got = torch.cat([ours(x[i: i + 32], mode).float().argmax(1) for i in range(0, len(x), 32)])
        agree = float((ref == got).float().mean())
        # Which precision actually ran: under `--amp auto` a CPU without native bf16 runs fp32.
        precision = {"onnx": "fp32 (onnxruntime)", "onnx_int8": "int8 (onnxruntime, static QDQ)", "bf16_fpmath": "fp32 tensors, bf16 conv/matmul math",
                     "fp32": "fp32"}.get(mode) or describe(torch.device("cpu"), args.amp, dtype, True)
        r["ours"][mode] = {"img_per_s": round(rate, 2), "repeats": [round(v, 2) for v in reps], "precision": precision,
                           "speedup": round(rate / base_rate, 2), "top1_agreement": round(agree, 4),
                           "gflops": round(flops * rate / 1e9, 1)}
        print(f"{name:18s} {mode:14s} baseline {base_rate:7.1f} img/s  ours {rate:7.1f} img/s  -> "
              f"{rate / base_rate:.2f}x (goal >= 3x)  top-1 agreement {agree:.2%} on {len(x)} (goal >= 99 %)  "
              f"achieved {r['baseline_gflops']} -> {r['ours'][mode]['gflops']} GFLOP/s  [{precision}; {weights} weights]",
              flush=True)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=None, help=f"dataset root (default: {REAL} if present, else generated)")
    p.add_argument("--models", nargs="+", default=["efficientnet_b0", "efficientnet_lite0", "resnet50"],
                   help="model names, or train run directories / checkpoints")
    p.add_argument("--images", type=int, default=512, help="val images timed and compared")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the images; median reported")
    p.add_argument("--amp", default="auto", help="our autocast mode (auto = engine.evaluate.amp_dtype)")
    p.add_argument("--modes", nargs="+", default=["bf16_autocast", "bf16_fpmath", "onnx"],
                   choices=["bf16_autocast", "bf16_fpmath", "fp32", "onnx", "onnx_int8"], help="our modes, each timed")
    p.add_argument("--calib-images", type=int, default=128, help="train images that calibrate onnx_int8")
    p.add_argument("--compile", action="store_true", help="also torch.compile our model (slow first call)")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--quick", action="store_true", help="tiny run: checks the script, numbers mean little")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    if args.quick:
        args.images, args.repeats, args.warmup, args.matmul_n = 64, 2, 1, 512
    import torch

    root = Path(args.root) if args.root else REAL
    if not root.exists():
        from tests.helpers import make_dataset

        root = make_dataset(Path(tempfile.mkdtemp(prefix="bench_infer_")) / "data", {"train": 10, "val": 20},
                            size=256, bad_files=False)
        print(f"no real data: generated {root}")
    x = load_images(root, args.images)
    calib = load_images(root, args.calib_images, split="train") if "onnx_int8" in args.modes else None
    peak = {"fp32": peak_gflops(torch.float32, args.matmul_n, 5),
            "bf16": peak_gflops(torch.bfloat16, args.matmul_n, 5)}
    print(f"{args.matmul_n}^3 product, GFLOP/s (torch.matmul / oneDNN 1x1 conv): fp32 {peak['fp32']['matmul']} / "
          f"{peak['fp32']['conv1x1']}, bf16 {peak['bf16']['matmul']} / {peak['bf16']['conv1x1']} "
          f"({torch.get_num_threads()} threads)")
    with tempfile.TemporaryDirectory(prefix="bench_infer_onnx_") as tmp:  # the ONNX files, removed after
        results = {name: bench_model(name, x, calib, args, Path(tmp)) for name in args.models}
    path = write_result(args.out, "bench_infer", {"args": vars(args), "cpu": cpu_info(), "peak_gflops": peak,
                                                  "results": results, "peak_rss_mib": peak_rss_mib()})
    print(f"peak RSS {peak_rss_mib():.0f} MiB; details: {path}")


if __name__ == "__main__":
    main()
