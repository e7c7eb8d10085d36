"""The shared inference loop: devices, autocast, skipped images, item alignment, mode restore."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imagenette_lab.data.dataset import ImageFolder, index_split
from imagenette_lab.data.transforms import default_data_cfg, eval_transform
from imagenette_lab.engine.evaluate import (
    amp_dtype,
    autocast_context,
    make_loader,
    resolve_device,
    run_inference,
    skipped_paths,
    tta_fn,
)
from imagenette_lab.errors import UserError


class MeanColour(nn.Module):
    """Deterministic 'model': per-image channel means, so outputs can be checked against inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)  # a 4-D parameter, so channels_last conversion is exercised

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _dataset(root, split="train"):
    index = index_split(root, split)
    return index, ImageFolder(index, eval_transform(default_data_cfg(32, crop_pct=1.0)))


def test_resolve_device():
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")


def test_amp_modes():
    cpu = torch.device("cpu")
    # amp_dtype(cpu, "auto") depends on the CPU's flags: tests/engine/test_precision.py
    assert amp_dtype(torch.device("cuda"), "auto") is torch.float16
    assert amp_dtype(cpu, "off") is None
    assert amp_dtype(cpu, "fp16") is torch.float16
    with pytest.raises(UserError, match="amp"):
        amp_dtype(cpu, "fp8")
    lin = nn.Linear(4, 4)
    with autocast_context(cpu, "bf16"):
        assert lin(torch.ones(1, 4)).dtype is torch.bfloat16
    with autocast_context(cpu, "off"):
        assert lin(torch.ones(1, 4)).dtype is torch.float32


def test_inference_skips_truncated_and_aligns_items(tiny_dataset):
    index, ds = _dataset(tiny_dataset)
    model = MeanColour().train()
    res = run_inference(model, make_loader(ds, 4, 0), device="cpu", amp="off")
    truncated = [i for i, s in enumerate(index.samples) if s.path.name == "truncated.JPEG"]
    assert len(truncated) == 1
    assert res.n_skipped == 1 and res.n == len(index) - 1
    assert truncated[0] not in res.indices.tolist()
    assert skipped_paths(index, res) == [str(index.samples[truncated[0]].path)]
    assert res.outputs.dtype is torch.float32 and res.outputs.shape == (res.n, 3)
    assert res.images_per_s > 0
    # Outputs, labels and indices line up with the dataset items they came from.
    for row, i in enumerate(res.indices.tolist()):
        x, y, _ = ds[i]
        assert res.labels[row] == y == index.samples[i].label
        torch.testing.assert_close(res.outputs[row], x.mean(dim=(1, 2)))
    assert model.training, "train/eval mode must be restored for a training loop's val pass"


def test_inference_with_workers_bf16_and_custom_fn(clean_dataset):
    index, ds = _dataset(clean_dataset, "val")
    res = run_inference(
        MeanColour(), make_loader(ds, 2, 2), device="cpu", amp="auto",
        fn=lambda m, x: m.conv(x).flatten(1),
    )
    assert res.n == len(index) == 9 and res.n_skipped == 0
    assert res.outputs.dtype is torch.float32 and res.outputs.shape == (9, 3 * 32 * 32)
    assert sorted(res.indices.tolist()) == list(range(9))


def test_flip_tta_averages_each_image_with_its_mirror(clean_dataset):
    index, ds = _dataset(clean_dataset, "val")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))  # not mirror-symmetric
    plain = run_inference(model, make_loader(ds, 4, 0), device="cpu", amp="off", channels_last=False)
    tta = run_inference(model, make_loader(ds, 4, 0), device="cpu", amp="off", channels_last=False,
                        fn=tta_fn("flip"))
    x = torch.stack([ds[i][0] for i in tta.indices.tolist()])
    with torch.no_grad():
        mirrored = model(x.flip(-1))
    torch.testing.assert_close(tta.outputs, (plain.outputs + mirrored) / 2)
    assert not torch.allclose(tta.outputs, plain.outputs)
    assert tta_fn("none") is None and tta_fn(None) is None
    with pytest.raises(UserError, match="test-time augmentation"):
        tta_fn("rotate")


def test_all_bad_batch_is_skipped(tiny_dataset):
    index, ds = _dataset(tiny_dataset)
    bad = next(i for i, s in enumerate(index.samples) if s.path.name == "truncated.JPEG")
    sampler = [bad, 0]  # batch size 1: the first batch is entirely undecodable
    res = run_inference(MeanColour(), make_loader(ds, 1, 0, sampler=sampler), device="cpu", amp="off")
    assert res.indices.tolist() == [0] and res.n_skipped == 1
    assert skipped_paths(index, res, expected=sampler) == [str(index.samples[bad].path)]


def test_shuffle_is_seeded(clean_dataset):
    _, ds = _dataset(clean_dataset, "val")

    def order(seed):
        return run_inference(MeanColour(), make_loader(ds, 3, 0, shuffle=True, seed=seed),
                             device="cpu", amp="off").indices.tolist()

    assert order(1) == order(1)
    assert order(1) != order(2) or order(1) != order(3)


def test_make_loader_rejects_bad_sizes(clean_dataset):
    _, ds = _dataset(clean_dataset, "val")
    with pytest.raises(UserError):
        make_loader(ds, 0, 0)
    with pytest.raises(UserError):
        make_loader(ds, 2, -1)
