"""Export a trained checkpoint to ONNX, safetensors or TorchScript, then prove the export on real images.

- onnx: torch's exporter (`torch.onnx.export(dynamo=True)`, opset OPSET) with a dynamic batch axis;
  class names and preprocessing in metadata_props["imagenette_lab"] (JSON). Checked with
  onnxruntime (CPU). `predict model.onnx ...` runs it (onnx_backend.py).
- safetensors: the weights under the plain timm/torchvision architecture's own key names, so
  `timm.create_model(name, num_classes=C, checkpoint_path=FILE)` or
  `torchvision.models.<name>(num_classes=C).load_state_dict(safetensors.torch.load_file(FILE))`
  rebuilds the classifier. The study head (BatchNorm -> Dropout -> Linear) is folded into one Linear
  (exact at inference); BatchNorm eps that differ from the plain model's are folded into running_var.
  Checked by loading it exactly that way.
- torchscript: `torch.jit.trace` of the eval model, metadata in the archive's extra files.
- onnx + int8: the ONNX export quantized by onnxruntime (quantize.py), calibrated on the `train` split
  of the check folder and checked on its val split; it passes on top-1 agreement >= INT8_MIN_AGREEMENT
  (int8 logits are not within MAX_DIFF of fp32 by construction).

Every format also gets `<FILE>.json` with the same metadata. The check runs PyTorch and the export
on the same preprocessed images (a val folder, or generated ones) and fails unless the max
|logit difference| <= MAX_DIFF and the top-1 predictions agree on every image.
"""

from __future__ import annotations

import io
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from imagenette_lab.errors import UsageError, UserError
from imagenette_lab.utils import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

FORMATS = ("onnx", "safetensors", "torchscript")
SUFFIXES = {"onnx": (".onnx",), "safetensors": (".safetensors",), "torchscript": (".pt", ".pth", ".ts", ".torchscript")}
OPSET = 20  # ONNX opset written by the exporter (onnxruntime >= 1.17 runs it)
MAX_DIFF = 1e-3
INT8_MIN_AGREEMENT = 0.99  # the benchmarks' goal for a faster inference path (benchmarks/README.md)
META_KEY = "imagenette_lab"
META_FORMAT = "imagenette-lab/export"


@dataclass(frozen=True)
class ParityCheck:
    """PyTorch vs the exported model on the same preprocessed images."""

    images: int
    data: str  # the image folder used, or "generated"
    backend: str  # what ran the export: onnxruntime, torchscript, timm, torchvision
    max_abs_diff: float  # max |logit difference| over all images and classes
    top1_agreement: float  # fraction of images with the same top-1 class
    torch_images_per_s: float  # model forward only, same thread count
    export_images_per_s: float
    torch_accuracy: float | None  # when the folder's classes are the checkpoint's
    export_accuracy: float | None
    allowed_diff: float | None = MAX_DIFF  # None: not gated (int8)
    min_agreement: float = 1.0

    @property
    def passed(self) -> bool:
        diff_ok = self.allowed_diff is None or self.max_abs_diff <= self.allowed_diff
        return diff_ok and self.top1_agreement >= self.min_agreement


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    metadata_path: Path  # <path>.json
    opset: int | None
    load_hint: str  # how to load the file without imagenette-lab
    check: ParityCheck


# ----------------------------------------------------------------------------- checkpoint
def resolve_checkpoint(spec: str | Path) -> Path:
    p = Path(spec).expanduser()
    if p.is_dir():
        for name in ("checkpoints/best.pt", "checkpoints/last.pt"):
            if (p / name).is_file():
                return p / name
        raise UserError(f"{p} is a directory without a checkpoint (expected {p / 'checkpoints' / 'best.pt'})")
    if not p.is_file():
        raise UserError(f"checkpoint {p} does not exist")
    return p


def load_for_export(spec: str | Path) -> tuple[nn.Module, dict[str, Any], Path]:
    from imagenette_lab.engine.checkpoint import load_checkpoint, model_from_checkpoint

    path = resolve_checkpoint(spec)
    try:
        ckpt = load_checkpoint(path)
    except UserError as e:
        raise UserError(f"{e}; export takes a checkpoint written by `imagenette-lab train` "
                        "(a .pt file or its run directory)") from None
    model, info = model_from_checkpoint(ckpt, "cpu")
    return model.float().eval(), info, path


def export_metadata(info: dict[str, Any], source: Path, fmt: str) -> dict[str, Any]:
    dc = info["data_cfg"]
    size = int(dc["input_size"][-1])
    crop_pct = float(dc.get("crop_pct", 0.875))
    return {
        "format": META_FORMAT, "version": 1, "export_format": fmt, "source": str(source),
        "model": info["arch"]["name"], "head": info["arch"]["head"], "num_classes": info["arch"]["num_classes"],
        "classes": info["classes"], "class_names": info["class_names"],
        "input": {"name": "input", "shape": ["batch", 3, size, size], "dtype": "float32", "layout": "NCHW"},
        "output": {"name": "logits", "shape": ["batch", info["arch"]["num_classes"]],
                   "note": "raw scores; apply softmax for probabilities"},
        "preprocessing": {
            "input_size": [3, size, size], "resize": int(math.floor(size / crop_pct)), "crop": size,
            "crop_pct": crop_pct, "interpolation": dc.get("interpolation", "bilinear"),
            "mean": [float(m) for m in dc["mean"]], "std": [float(s) for s in dc["std"]],
            "steps": "RGB; resize the short side to `resize` (antialiased), centre-crop `crop`, "
                     "scale to [0, 1], subtract mean, divide by std",
            # flip: the run's scores average each image's logits with its mirror's (data.tta)
            "tta": dc.get("tta", "none"),
        },
        "opset": OPSET if fmt == "onnx" else None,
    }


# ----------------------------------------------------------------------------- formats
def _example(meta: dict[str, Any], n: int = 2) -> Tensor:
    size = meta["preprocessing"]["crop"]
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def export_onnx(model: nn.Module, meta: dict[str, Any], out: Path) -> str:
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 5):
        raise UserError(f"ONNX export needs torch >= 2.5 (the torch.export-based exporter); this is {torch.__version__}")
    try:
        import onnx
        import onnxscript  # noqa: F401 - the dynamo exporter needs it
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxscript: pip install 'imagenette-lab[export]'") from None
    with tempfile.TemporaryDirectory() as tmp:
        batch = torch.export.Dim("batch", min=1)
        program = torch.onnx.export(model, (_example(meta),), dynamo=True, opset_version=OPSET,
                                    input_names=["input"], output_names=["logits"],
                                    dynamic_shapes={"x": {0: batch}}, verbose=False)
        program.save(Path(tmp) / "model.onnx")
        proto = onnx.load(Path(tmp) / "model.onnx")
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    proto.producer_name = "imagenette-lab"
    atomic_write_bytes(out, proto.SerializeToString())
    return f'onnxruntime.InferenceSession("{out.name}").run(None, {{"input": images}})  # images float32 [N,3,H,W]'


def export_torchscript(model: nn.Module, meta: dict[str, Any], out: Path) -> str:
    log.info("TorchScript is deprecated upstream (torch >= 2.9); ONNX is the maintained export path")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the deprecation, said once above
        traced = torch.jit.trace(model, _example(meta), check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={f"{META_KEY}.json": json.dumps(meta)})
    atomic_write_bytes(out, buf.getvalue())
    return f'torch.jit.load("{out.name}")(images)'


def plain_architecture(name: str, num_classes: int) -> tuple[nn.Module, str, str]:
    """(the plain timm/torchvision model with `num_classes` outputs, library, architecture)."""
    import timm
    import torchvision

    from imagenette_lab.models.factory import _TV_KWARGS, resolve_name

    source, arch = resolve_name(name)
    if source == "timm":
        return timm.create_model(arch, pretrained=False, num_classes=num_classes), "timm", arch
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **_TV_KWARGS.get(arch, {})), \
        "torchvision", arch


def plain_state_dict(model: nn.Module, plain: nn.Module, library: str, arch: str) -> dict[str, Tensor]:
    """Our Classifier's weights under `plain`'s key names; UserError where it cannot be exact."""
    from imagenette_lab.models.factory import _classifier_paths

    paths = _classifier_paths(plain, "timm" if library == "timm" else "tv", arch)
    target = plain.get_submodule(paths[0]) if len(paths) == 1 else None
    if not isinstance(target, nn.Linear):
        raise UserError(f"{arch}'s classifier is not one nn.Linear layer ({', '.join(paths)}): safetensors export "
                        "cannot map our head onto it; export onnx or torchscript instead")
    head = list(model.head)
    lin = head[-1]
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    if isinstance(head[0], nn.BatchNorm1d):  # the study head: fold eval-mode BatchNorm into the Linear
        bn = head[0]
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        shift = bn.bias.detach().double() - bn.running_mean.double() * scale
        w, b = w * scale[None, :], b + w @ shift
    state = {k: v.detach().clone() for k, v in model.base.state_dict().items()}
    plain_modules = dict(plain.named_modules())
    for mname, mod in model.base.named_modules():
        other = plain_modules.get(mname)
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and isinstance(other, type(mod)) \
                and mod.eps != other.eps and mod.running_var is not None:
            # Same normalisation under the plain model's eps: var' + eps' = var + eps.
            var = mod.running_var.detach().double() + (mod.eps - other.eps)
            if (var < 0).any():
                raise UserError(f"{arch}: BatchNorm eps {mod.eps} < the plain model's {other.eps} cannot be folded")
            state[f"{mname}.running_var"] = var.to(mod.running_var.dtype)
    state[f"{paths[0]}.weight"] = w.float()
    state[f"{paths[0]}.bias"] = b.float()
    own = plain.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    shapes = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        detail = "; ".join(f"{label}: {', '.join(keys[:3])}" for label, keys in
                           (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if keys)
        raise UserError(f"our {arch} weights do not map onto the plain {library} {arch} ({detail}); "
                        "export onnx or torchscript instead")
    return {k: v.contiguous() for k, v in state.items()}


def export_safetensors(model: nn.Module, meta: dict[str, Any], out: Path) -> str:
    try:
        from safetensors.torch import save
    except ImportError:
        raise UserError("safetensors export needs safetensors: pip install 'imagenette-lab[export]'") from None
    plain, library, arch = plain_architecture(meta["model"], meta["num_classes"])
    state = plain_state_dict(model, plain, library, arch)
    meta["plain"] = {"library": library, "architecture": arch, "num_classes": meta["num_classes"]}
    info = {"format": "pt", META_KEY: json.dumps(meta)}
    atomic_write_bytes(out, save(state, metadata=info))
    if library == "timm":
        return f'timm.create_model("{arch}", num_classes={meta["num_classes"]}, checkpoint_path="{out.name}")'
    return (f'torchvision.models.get_model("{arch}", num_classes={meta["num_classes"]})'
            f'.load_state_dict(safetensors.torch.load_file("{out.name}"))')


def load_plain(path: Path, meta: dict[str, Any]) -> nn.Module:
    """The safetensors file loaded exactly as the hint says (timm checkpoint_path / torchvision)."""
    import timm
    import torchvision
    from safetensors.torch import load_file

    p = meta["plain"]
    if p["library"] == "timm":
        return timm.create_model(p["architecture"], num_classes=p["num_classes"], checkpoint_path=str(path)).eval()
    from imagenette_lab.models.factory import _TV_KWARGS

    net = torchvision.models.get_model(p["architecture"], weights=None, num_classes=p["num_classes"],
                                       **_TV_KWARGS.get(p["architecture"], {}))
    net.load_state_dict(load_file(str(path)))
    return net.eval()


# ----------------------------------------------------------------------------- parity check
def _check_index(info: dict[str, Any], root: str | Path | None, split: str, n: int, tmp: Path):
    """(SplitIndex, has_true_labels, description) of the images to check on."""
    from imagenette_lab.data.dataset import index_split

    if root is not None:
        try:
            index, labelled = index_split(root, split, classes=info["classes"]), True
        except UserError:  # other class folders: still fine for parity, no accuracy
            index, labelled = index_split(root, split), False
        if n > 0:
            index = index.subset(max(1, math.ceil(n / max(1, len(index.classes)))))
        return index, labelled, str(Path(root) / split)
    from imagenette_lab.data.synthetic import make_synthetic_dataset

    resize = int(math.floor(int(info["data_cfg"]["input_size"][-1]) / float(info["data_cfg"].get("crop_pct", 0.875))))
    per = max(1, math.ceil((n or 24) / 3))
    make_synthetic_dataset(tmp, {"val": per}, size=max(resize, 32) + 8)
    return index_split(tmp, "val"), False, "generated"


def parity_check(model: nn.Module, exported: Callable[[Tensor], Tensor], backend: str, info: dict[str, Any],
                 root: str | Path | None = None, split: str = "val", images: int = 64,
                 batch_size: int = 32) -> ParityCheck:
    """Run both models batch by batch on the same preprocessed images; compare logits and top-1."""
    from imagenette_lab.data.sources import make_dataset
    from imagenette_lab.data.transforms import eval_transform
    from imagenette_lab.engine.evaluate import make_loader

    n = diff = agree = hits_t = hits_e = 0
    secs_t = secs_e = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        index, labelled, where = _check_index(info, root, split, images, Path(tmp))
        loader = make_loader(make_dataset(index, eval_transform(info["data_cfg"])), batch_size, 0)
        with torch.inference_mode():
            for batch in loader:
                if batch is None:
                    continue
                x, y = batch[0], batch[1]
                t0 = time.perf_counter()
                ref = model(x).float()
                t1 = time.perf_counter()
                out = exported(x).float()
                t2 = time.perf_counter()
                secs_t, secs_e = secs_t + t1 - t0, secs_e + t2 - t1
                if out.shape != ref.shape:
                    raise UserError(f"the export returns {tuple(out.shape)} scores for a batch, PyTorch {tuple(ref.shape)}")
                diff = max(diff, float((out - ref).abs().max()))
                agree += int((out.argmax(1) == ref.argmax(1)).sum())
                hits_t += int((ref.argmax(1) == y).sum())
                hits_e += int((out.argmax(1) == y).sum())
                n += len(x)
    if n == 0:
        raise UserError(f"no readable images in {where} to check the export on")
    return ParityCheck(n, where, backend, diff, agree / n, round(n / secs_t, 2), round(n / secs_e, 2),
                       hits_t / n if labelled else None, hits_e / n if labelled else None)


# ----------------------------------------------------------------------------- entry point
def export_checkpoint(checkpoint: str | Path, out: str | Path, *, format: str = "onnx",  # noqa: A002
                      check_root: str | Path | None = None, check_split: str = "val", check_images: int = 64,
                      batch_size: int = 32, int8: bool = False, calib_images: int = 128) -> ExportResult:
    """Write `out` (+ `out.json`) from a `train` checkpoint, then run the parity check.

    check_root: an image folder with a `check_split` split (default: generated images);
    check_images: about how many images to check on (0 = the whole split).
    int8 (onnx only): quantize, calibrating on about `calib_images` of check_root's train split.
    Raises UserError if the check fails (the exported file is kept for inspection).
    """
    if format not in FORMATS:
        raise UsageError(f"unknown format '{format}'; choose one of {', '.join(FORMATS)}")
    if int8 and (format != "onnx" or check_root is None or check_split == "train" or calib_images < 1):
        raise UsageError("int8 export is ONNX only and calibrates on real images: pass --root DIR (its train split, "
                         "calibration images >= 1) and check on another split (default val)")
    out = Path(out).expanduser()
    if not out.name.lower().endswith(SUFFIXES[format]):
        raise UsageError(f"a {format} file must end in {' or '.join(SUFFIXES[format])} (got {out.name}); "
                         "predict and timm pick the loader by the suffix")
    if check_images < 0 or batch_size < 1:
        raise UsageError("check images must be >= 0 (0 = all) and batch size >= 1")
    model, info, source = load_for_export(checkpoint)
    from imagenette_lab.utils import prepare_out_dir

    prepare_out_dir(out.parent)
    meta = export_metadata(info, source, format)
    if int8:
        from imagenette_lab.quantize import SETTINGS

        meta["quantization"] = {**SETTINGS, "calibration": str(Path(check_root) / "train")}
    t0 = time.perf_counter()
    writer = {"onnx": export_onnx, "safetensors": export_safetensors, "torchscript": export_torchscript}[format]
    fp32 = out.with_name(f".{out.name}.fp32") if int8 else out  # never an fp32 file under the int8 name
    hint = writer(model, meta, fp32)
    if int8:
        try:
            meta["quantization"].update(_quantize(fp32, out, info, check_root, calib_images, batch_size))
        finally:
            fp32.unlink(missing_ok=True)
        hint = hint.replace(fp32.name, out.name)
    log.info("wrote %s (%s, %.1f MB) in %.1f s", out, format, out.stat().st_size / 1e6, time.perf_counter() - t0)
    side = out.with_name(out.name + ".json")
    if format == "onnx":
        from imagenette_lab.onnx_backend import OnnxClassifier

        exported, backend = OnnxClassifier(out), "onnxruntime"
    elif format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            exported, backend = torch.jit.load(str(out)).eval(), "torchscript"
    else:
        exported, backend = load_plain(out, meta), meta["plain"]["library"]
    check = parity_check(model, exported, backend, info, check_root, check_split, check_images, batch_size)
    if int8:
        check = replace(check, allowed_diff=None, min_agreement=INT8_MIN_AGREEMENT)
    meta["check"] = {**asdict(check), "passed": check.passed}
    atomic_write_json(side, meta)
    result = ExportResult(out, format, side, meta["opset"], hint, check)
    if not check.passed:
        allowed = f"allowed {check.allowed_diff:g}" if check.allowed_diff is not None else "not gated"
        raise UserError(f"export check failed on {check.images} images: max |logit diff| {check.max_abs_diff:.2e} "
                        f"({allowed}), top-1 agreement {check.top1_agreement:.2%} (needed {check.min_agreement:.0%})"
                        f"; {out} is kept" + ("; this model loses too much in int8: export it in fp32" if int8 else ""))
    return result


def _quantize(src: Path, out: Path, info: dict[str, Any], root: str | Path, n: int, batch_size: int) -> dict[str, Any]:
    """Write `out`, the int8 version of the fp32 ONNX file `src`, calibrated on ~n train images of `root`;
    returns quantize_onnx's settings (with the calibration image count)."""
    from imagenette_lab.data.dataset import index_split
    from imagenette_lab.data.sources import make_dataset
    from imagenette_lab.data.transforms import eval_transform
    from imagenette_lab.engine.evaluate import make_loader
    from imagenette_lab.quantize import quantize_onnx

    index = index_split(root, "train")
    index = index.subset(max(1, math.ceil(n / max(1, len(index.classes)))))
    loader = make_loader(make_dataset(index, eval_transform(info["data_cfg"])), batch_size, 0)
    t0 = time.perf_counter()
    settings = quantize_onnx(src, out, (b[0] for b in loader if b is not None))
    log.info("quantized %s to int8 on %d train images in %.1f s (%.1f MB)", out, settings["calibration_images"],
             time.perf_counter() - t0, out.stat().st_size / 1e6)
    return settings
