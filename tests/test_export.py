"""`export`: ONNX (onnxruntime parity, metadata, dynamic batch, predict backend), safetensors that plain
timm/torchvision load, TorchScript, and the bad inputs (not our checkpoint, size/class mismatches)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import imagenette_lab as lab
from imagenette_lab.cli import main
from imagenette_lab.config import RunConfig
from imagenette_lab.data.classes import display_name
from imagenette_lab.data.transforms import default_data_cfg
from imagenette_lab.engine.checkpoint import model_from_checkpoint, save_checkpoint
from imagenette_lab.errors import UsageError, UserError
from imagenette_lab.models.factory import create_classifier
from tests.helpers import REAL_224, TINY_CLASSES, make_dataset, require

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def fake_checkpoint(path: Path, name: str, head: str = "study", size: int = 32, small_var: bool = False) -> Path:
    """A checkpoint in our format with random weights and non-trivial BatchNorm statistics (no training)."""
    torch.manual_seed(0)
    model = create_classifier(name, len(TINY_CLASSES), head=head)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            # small_var: eps matters (1e-3 vs 1e-5); gamma keeps the activations' scale sane.
            m.running_var.copy_(0.002 + 0.002 * torch.rand(n, generator=g) if small_var else 0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(torch.sqrt(m.running_var + m.eps) * (0.8 + 0.4 * torch.rand(n, generator=g)))
            m.bias.data.copy_(0.2 * torch.rand(n, generator=g) - 0.1)
    state = {
        "arch": {"name": name, "num_classes": len(TINY_CLASSES), "head": head, "dropout": 0.2, "freeze_base": False},
        "model": model.state_dict(), "classes": list(TINY_CLASSES),
        "class_names": [display_name(c) for c in TINY_CLASSES], "data_cfg": default_data_cfg(size),
        "config": RunConfig().to_dict(), "epoch": 1, "stage": "main",
    }
    save_checkpoint(state, path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """test_resnet (study head) exported to ONNX once through the CLI, checked on a class-folder dataset."""
    tmp = tmp_path_factory.mktemp("export")
    data = make_dataset(tmp / "data", {"val": 4}, size=40, bad_files=False)
    ckpt = fake_checkpoint(tmp / "model.pt", "test_resnet", size=32)
    return {"tmp": tmp, "data": data, "ckpt": ckpt, "onnx": tmp / "out" / "model.onnx"}


def test_onnx_export_parity_metadata_and_dynamic_batch(exported, capsys) -> None:
    out = exported["onnx"]
    assert main(["export", str(exported["ckpt"]), "--format", "onnx", "--out", str(out),
                 "--root", str(exported["data"])]) == 0
    text = capsys.readouterr().out
    assert "opset 20" in text and "top-1 agreement 100.00%" in text and "accuracy: pytorch" in text
    side = json.loads((out.parent / "model.onnx.json").read_text())
    assert side["check"]["passed"] and side["check"]["images"] == 12 and side["check"]["max_abs_diff"] <= 1e-3
    assert side["check"]["torch_accuracy"] == side["check"]["export_accuracy"]

    proto = onnx.load(out)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["imagenette_lab"])
    assert meta["class_names"] == [display_name(c) for c in TINY_CLASSES]
    pre = meta["preprocessing"]
    assert (pre["resize"], pre["crop"], pre["mean"], pre["std"]) == (36, 32, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) == 20

    # Dynamic batch axis: 1 and 5 images, same logits as PyTorch.
    model, _ = model_from_checkpoint(exported["ckpt"])
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = torch.randn(n, 3, 32, 32)
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == (n, 3) and np.abs(got - ref).max() <= 1e-4


def test_predict_runs_the_onnx_file_like_the_checkpoint(exported, capsys) -> None:
    val = exported["data"] / "val"
    a = lab.predict(exported["onnx"], val, top_k=3, workers=0)
    b = lab.predict(exported["ckpt"], val, top_k=3, workers=0, amp="off")  # float32 like onnxruntime
    assert (a.backend, b.backend) == ("onnxruntime", "pytorch") and len(a) == len(b) == 12
    for pa, pb in zip(a, b):
        assert pa.path == pb.path and [c.name for c in pa.top] == [c.name for c in pb.top]
        assert all(abs(x.probability - y.probability) < 1e-4 for x, y in zip(pa.top, pb.top))
    assert a.images_per_s > 0
    assert main(["predict", str(exported["onnx"]), str(val), "-k", "1"]) == 0
    assert "onnxruntime:" in capsys.readouterr().err


def test_onnx_size_and_class_mismatches_are_refused(exported, tmp_path: Path, capsys) -> None:
    out, val = exported["onnx"], exported["data"] / "val"
    assert main(["predict", str(out), str(val), "--img-size", "64"]) == 1
    assert "takes 32x32 inputs, but 64x64 was asked for" in capsys.readouterr().err
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    assert main(["predict", str(out), str(val), "--labels", str(labels)]) == 1
    assert "scores 3 classes, but 2 class names were given" in capsys.readouterr().err

    # A file whose metadata disagrees with its graph.
    proto = onnx.load(out)
    meta = json.loads(proto.metadata_props[0].value)
    meta["preprocessing"]["input_size"] = [3, 48, 48]
    proto.metadata_props[0].value = json.dumps(meta)
    onnx.save(proto, tmp_path / "edited.onnx")
    with pytest.raises(UserError, match="metadata says 48x48 inputs but the graph takes 32x32"):
        lab.predict(tmp_path / "edited.onnx", val)
    meta["preprocessing"]["input_size"] = [3, 32, 32]
    meta["class_names"] = ["a", "b"]
    proto.metadata_props[0].value = json.dumps(meta)
    onnx.save(proto, tmp_path / "edited.onnx")
    with pytest.raises(UserError, match="names 2 classes but the graph outputs 3"):
        lab.predict(tmp_path / "edited.onnx", val)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        lab.predict(tmp_path / "junk.onnx", val)


def test_export_refuses_files_that_are_not_our_checkpoints(tmp_path: Path, capsys) -> None:
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    (tmp_path / "notes.pt").write_text("hello")
    for f, msg in (("plain.pt", "not an imagenette-lab training checkpoint"), ("notes.pt", "corrupt or truncated")):
        assert main(["export", str(tmp_path / f), "--out", str(tmp_path / "m.onnx")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0] and "export takes a checkpoint" in err[0], err
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.onnx")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(UsageError, match="must end in .safetensors"):
        lab.export(tmp_path / "plain.pt", tmp_path / "m.bin", format="safetensors")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("name,head,library", [
    ("efficientnet_lite0", "study", "timm"),  # BatchNorm eps 1e-3 (plain timm: 1e-5) + the study head folded
    ("mobilenet_v3_small", "linear", "torchvision"),  # torchvision, Dropout before the final Linear
])
def test_safetensors_loads_into_the_plain_architecture(name: str, head: str, library: str, tmp_path: Path) -> None:
    import timm
    import torchvision
    from safetensors.torch import load_file

    ckpt = fake_checkpoint(tmp_path / "m.pt", name, head=head, small_var=library == "timm")
    r = lab.export(ckpt, tmp_path / "m.safetensors", format="safetensors", check_images=6)
    assert r.check.passed and r.check.backend == library
    if library == "timm":
        plain = timm.create_model(name, num_classes=3, checkpoint_path=str(r.path))
    else:
        plain = torchvision.models.get_model(name, num_classes=3)
        plain.load_state_dict(load_file(r.path))
    assert "num_classes=3" in r.load_hint
    ours, _ = model_from_checkpoint(ckpt)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), ours(x), atol=1e-4, rtol=1e-4)
    if library == "timm":  # the eps difference really was folded into running_var
        saved, orig = load_file(r.path), ours.base.state_dict()
        assert torch.allclose(saved["bn1.running_var"] - orig["bn1.running_var"], torch.tensor(1e-3 - 1e-5))


def test_torchscript_export(tmp_path: Path) -> None:
    ckpt = fake_checkpoint(tmp_path / "m.pt", "test_resnet")
    r = lab.export(ckpt, tmp_path / "m.ts", format="torchscript", check_images=6)
    assert r.check.passed and r.check.max_abs_diff <= 1e-5 and r.metadata_path.is_file()
    files = {"imagenette_lab.json": ""}
    torch.jit.load(str(r.path), _extra_files=files)
    assert json.loads(files["imagenette_lab.json"])["num_classes"] == 3


def test_onnx_parity_on_real_photographs(exported, tmp_path: Path) -> None:
    root = require(REAL_224)
    ckpt = fake_checkpoint(tmp_path / "m.pt", "test_resnet", size=224)
    r = lab.export(ckpt, tmp_path / "m.onnx", check_root=root, check_images=20)
    assert r.check.passed and r.check.images >= 20 and r.check.data.endswith("val")


def test_int8_onnx_is_quantized_on_train_images_and_gated_on_agreement(tmp_path: Path, monkeypatch, capsys) -> None:
    from imagenette_lab import export as export_module

    data = make_dataset(tmp_path / "data", {"train": 6, "val": 10}, size=40, bad_files=False)
    # A trained model (colour-coded classes): random weights have too little margin to survive int8.
    run = lab.train("exp2_scratch_cpu", root=str(data), out_dir=str(tmp_path / "runs"), name="tiny", epochs=3,
                    **{"model.name": "test_resnet", "data.img_size": 32, "data.batch_size": 6, "data.workers": 0,
                       "train.amp": "off", "data.holdout_frac": 0})
    ckpt = run.checkpoint
    out = tmp_path / "out" / "model.onnx"
    args = ["export", str(ckpt), "--out", str(out), "--root", str(data), "--int8"]
    assert main(args) == 0, capsys.readouterr().err
    assert "(onnx, int8, opset 20)" in capsys.readouterr().out
    proto = onnx.load(out)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in proto.graph.node}
    assert any(t.data_type == onnx.TensorProto.INT8 for t in proto.graph.initializer)  # int8 weights
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.onnx.json"]  # no fp32 left
    side = json.loads((out.parent / "model.onnx.json").read_text())
    q, check = side["quantization"], side["check"]
    assert q["calibration_images"] == 18 and q["calibration"].endswith("train") and q["dtype"] == "int8"
    assert check["images"] == 30 and check["min_agreement"] == 0.99 and check["allowed_diff"] is None
    assert check["passed"] and check["top1_agreement"] >= 0.99
    assert len(lab.predict(out, data / "val", top_k=1, workers=0)) == 30  # predict runs the int8 file
    # The gate: below the required agreement the export fails with one line and keeps the file.
    monkeypatch.setattr(export_module, "INT8_MIN_AGREEMENT", 1.01)
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "top-1 agreement" in err and "needed 101%" in err and "int8" in err and out.is_file()
    # Bad input: int8 without real images to calibrate on, or for another format.
    for bad in (args[:4] + ["--int8"], args + ["--format", "safetensors"]):
        assert main(bad) == 2
        assert "int8 export is ONNX only" in capsys.readouterr().err
