import torch
from PIL import Image

from imagenette_lab.data.transforms import batch_mixer, default_data_cfg, eval_transform, train_transform


def test_eval_transform_shape_and_normalisation():
    cfg = default_data_cfg(64, crop_pct=0.875)
    x = eval_transform(cfg)(Image.new("RGB", (120, 90), (124, 116, 104)))
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    # ImageNet mean colour normalises to ~0
    assert x.abs().max() < 0.02


def test_train_presets_shapes():
    cfg = default_data_cfg(48)
    im = Image.new("RGB", (100, 80), (10, 200, 30))
    for aug in ("none", "baseline", "trivialaugment", "randaugment"):
        assert train_transform(cfg, aug, random_erasing=0.5)(im).shape == (3, 48, 48)


def test_mixer_soft_labels():
    assert batch_mixer(3) is None
    mix = batch_mixer(3, mixup=0.2, cutmix=1.0)
    x, y = mix(torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]))
    assert y.shape == (4, 3) and torch.allclose(y.sum(1), torch.ones(4))
