"""Run an exported .onnx classifier with onnxruntime (CPU) behind the same interface as a torch model.

`predict` dispatches here on the .onnx suffix. `OnnxClassifier` is an nn.Module whose forward
feeds the batch to an onnxruntime session, so every torch inference loop can drive it unchanged.
Class names and preprocessing come from the file's metadata_props (written by `export`), else from
the `<file>.json` side file; a file without either gets ImageNet defaults and a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from imagenette_lab.errors import UserError

log = logging.getLogger(__name__)

META_KEY = "imagenette_lab"  # metadata_props key holding our JSON (class names, preprocessing)


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("running .onnx models needs onnxruntime: pip install 'imagenette-lab[export]'") from None
    return onnxruntime


class OnnxClassifier(nn.Module):
    """logits = session.run(images); the graph's static input size and class count are checked."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        ort = _ort()
        self.path = Path(path)
        opts = ort.SessionOptions()
        # Same thread count as torch, so img/s of the two backends compare like with like.
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError(f"{self.path} is not a loadable ONNX model ({reason})") from None
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise UserError(f"{self.path} takes inputs of shape {shape}; an image classifier takes [batch, 3, H, W]")
        h, w = shape[2], shape[3]
        self.input_hw = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        c = out.shape[-1] if len(out.shape) == 2 else None
        self.num_classes = c if isinstance(c, int) else None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_hw is not None and tuple(x.shape[-2:]) != self.input_hw:
            raise UserError(f"{self.path} takes {self.input_hw[0]}x{self.input_hw[1]} images, got "
                            f"{x.shape[-2]}x{x.shape[-1]} after preprocessing; check the image size option")
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run([self.output_name], {self.input_name: arr})[0])


def read_metadata(model: OnnxClassifier) -> dict[str, Any] | None:
    """Our export metadata from the file itself, else from the `<file>.json` side file, else None."""
    raw = model.metadata.get(META_KEY)
    if raw is None:
        side = model.path.with_name(model.path.name + ".json")
        if not side.is_file():
            return None
        raw = side.read_text()
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise UserError(f"the imagenette-lab metadata of {model.path} is not valid JSON") from None
    return meta if isinstance(meta, dict) else None


def load_onnx_predictor(path: str | Path, device: torch.device | str = "cpu"):
    """A predict.Predictor whose model is an OnnxClassifier; metadata checked against the graph."""
    from imagenette_lab.data.transforms import default_data_cfg
    from imagenette_lab.predict import Predictor

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"ONNX file {path} does not exist")
    if torch.device(device).type != "cpu":
        log.info("onnxruntime runs %s on the CPU", path.name)
    model = OnnxClassifier(path)
    meta = read_metadata(model)
    if meta is None:
        if model.input_hw is None or model.num_classes is None:
            raise UserError(f"{path} has no imagenette-lab metadata and no fixed input size / class count; "
                            "export it with `imagenette-lab export`")
        log.warning("%s has no imagenette-lab metadata: assuming ImageNet mean/std and crop 0.875; "
                    "class names are indices (pass labels to name them)", path)
        data_cfg = default_data_cfg(model.input_hw[0])
        labels = [str(i) for i in range(model.num_classes)]
    else:
        pre = meta.get("preprocessing") or {}
        data_cfg = {k: pre[k] for k in ("input_size", "mean", "std", "crop_pct", "interpolation", "tta") if k in pre}
        labels = [str(x) for x in meta.get("class_names") or []]
        size = tuple(int(v) for v in data_cfg.get("input_size", (3, 0, 0))[-2:])
        if model.input_hw is not None and size != model.input_hw:
            raise UserError(f"{path}: its metadata says {size[0]}x{size[1]} inputs but the graph takes "
                            f"{model.input_hw[0]}x{model.input_hw[1]}; export it again")
        if model.num_classes is not None and len(labels) != model.num_classes:
            raise UserError(f"{path}: its metadata names {len(labels)} classes but the graph outputs "
                            f"{model.num_classes} scores; export it again")
    return Predictor(model, labels, data_cfg, str(path), torch.device("cpu"))
