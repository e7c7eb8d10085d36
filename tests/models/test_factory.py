"""Model factory: names, builds, heads, freezing, local weight files, offline errors, data configs.

Everything uses random init and 64x64 inputs, so no network and little CPU.
"""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from imagenette_lab.errors import UsageError, UserError
from imagenette_lab.models import (
    Classifier,
    create_classifier,
    create_imagenet_model,
    data_config,
    list_models,
    resolve_name,
)

X = torch.randn(2, 3, 64, 64)


def test_list_models_has_both_sources_once():
    names = list_models()
    assert len(names) == len(set(names))
    for n in ("resnet50", "efficientnet_b0", "vit_b_16", "efficientnet_lite0", "resnet10t"):
        assert n in names


def test_resolve_name_prefers_torchvision_and_honours_prefixes():
    assert resolve_name("efficientnet_b0") == ("tv", "efficientnet_b0")
    assert resolve_name("timm:efficientnet_b0") == ("timm", "efficientnet_b0")
    assert resolve_name("efficientnet_lite0") == ("timm", "efficientnet_lite0")
    assert resolve_name("tv:resnet18") == ("tv", "resnet18")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UserError, match=r"unknown model 'resnet5O'.*did you mean: .*resnet50"):
        create_imagenet_model("resnet5O", weights=None)
    # Lite0 is timm-only, so forcing torchvision must fail.
    with pytest.raises(UserError, match="unknown model"):
        resolve_name("tv:efficientnet_lite0")


def test_imagenet_resnet50_random_init_is_1000_way():
    model = create_imagenet_model("resnet50", weights=None).eval()
    with torch.no_grad():
        assert model(X).shape == (2, 1000)


def test_unknown_torchvision_weights_tag():
    with pytest.raises(UserError, match="IMAGENET1K_V2"):
        create_imagenet_model("resnet50", weights="IMAGENET1K_V9")


@pytest.mark.parametrize(
    "name, head",
    [("resnet18", "study"), ("efficientnet_b0", "study"), ("timm:resnet10t", "linear"),
     ("efficientnet_lite0", "study")],
)
def test_create_classifier_gives_num_classes_logits(name, head):
    clf = create_classifier(name, 7, head=head, dropout=0.3)
    assert isinstance(clf, Classifier) and clf.num_classes == 7
    clf.train()  # BatchNorm in the study head needs batch > 1: we use 2
    logits = clf(X)
    assert logits.shape == (2, 7)
    # timm's meaning: forward_features -> unpooled spatial maps; forward_head pools (pre_logits) + head.
    maps = clf.forward_features(X)
    assert maps.ndim == 4 and maps.shape[0] == 2
    pooled = clf.forward_head(maps, pre_logits=True)
    assert pooled.shape == (2, clf.num_features)
    clf.eval()
    with torch.no_grad():
        assert torch.allclose(clf.pooled_features(X), clf.forward_head(clf.forward_features(X), pre_logits=True), atol=1e-5)
        assert torch.allclose(clf(X), clf.forward_head(clf.forward_features(X)), atol=1e-5)
        assert torch.allclose(clf(X), clf.head_from_pooled(clf.pooled_features(X)), atol=1e-5)
        # Cached features are pooled vectors: forward_head takes them as such too (older callers).
        assert torch.allclose(clf.forward_head(clf.pooled_features(X)), clf(X), atol=1e-5)
    kinds = [type(m) for m in clf.head]
    expected = [nn.Dropout, nn.Linear] if head == "linear" else [nn.BatchNorm1d, nn.Dropout, nn.Linear]
    assert kinds == expected
    assert clf.head[-2].p == 0.3
    # The ImageNet classifier is gone from the base: no 1000-way Linear left anywhere in it.
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in clf.base.modules())


def test_torchvision_dropout_before_classifier_is_removed():
    clf = create_classifier("efficientnet_b0", 3)
    assert not any(isinstance(m, nn.Dropout) for m in clf.base.modules())


def test_freeze_base_blocks_grads_and_batchnorm_stats():
    torch.manual_seed(0)
    clf = create_classifier("resnet18", 3, freeze_base=True)
    clf.train()
    assert clf.freeze_base and not clf.base.training and clf.head.training
    assert all(not p.requires_grad for p in clf.base.parameters())
    base_bn = clf.base.bn1.running_mean.clone()
    head_bn = clf.head[0].running_mean.clone()

    clf(X).sum().backward()
    assert all(p.grad is None for p in clf.base.parameters())
    assert all(p.grad is not None for p in clf.head.parameters())
    assert torch.equal(clf.base.bn1.running_mean, base_bn)  # frozen like Keras trainable=False
    assert not torch.equal(clf.head[0].running_mean, head_bn)  # the head still learns its statistics

    clf.unfreeze().train()
    assert not clf.freeze_base and clf.base.training
    assert all(p.requires_grad for p in clf.base.parameters())
    clf(X)
    assert not torch.equal(clf.base.bn1.running_mean, base_bn)


def test_classifier_rejects_bad_head_and_dropout():
    with pytest.raises(UsageError, match="unknown head"):
        Classifier(nn.Identity(), 4, 2, head="mlp")
    with pytest.raises(UsageError, match="dropout"):
        Classifier(nn.Identity(), 4, 2, dropout=1.5)


def test_architecture_without_linear_classifier_is_a_user_error():
    with pytest.raises(UserError, match="no final nn.Linear"):
        create_classifier("squeezenet1_1", 3)


def test_weights_file_round_trip_and_checkpoint_wrappers(tmp_path):
    src = create_imagenet_model("resnet18", weights=None)
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pt"
    torch.save(src.state_dict(), plain)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, wrapped)
    for f in (plain, wrapped):
        model = create_imagenet_model("resnet18", weights_file=str(f))
        assert torch.equal(model.conv1.weight, src.conv1.weight)
        assert torch.equal(model.fc.weight, src.fc.weight)
    # A classifier accepts the 1000-way file: its fc is replaced by the new head anyway.
    clf = create_classifier("resnet18", 10, weights_file=plain)
    assert torch.equal(clf.base.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    assert clf(X).shape == (2, 10)


def test_weights_file_for_another_architecture_is_explained(tmp_path):
    f = tmp_path / "resnet18.pth"
    torch.save(create_imagenet_model("resnet18", weights=None).state_dict(), f)
    with pytest.raises(UserError, match=r"missing keys: .*unexpected keys: .*another architecture"):
        create_imagenet_model("efficientnet_b0", weights_file=f)
    # Same architecture, different class count: reported as a shape mismatch.
    g = tmp_path / "resnet18_10way.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), g)
    with pytest.raises(UserError, match="shape mismatches: fc.bias, fc.weight"):
        create_imagenet_model("resnet18", weights_file=g)
    # One of our own classifier checkpoints lacks the ImageNet fc entirely.
    h = tmp_path / "classifier.pth"
    torch.save(create_classifier("resnet18", 10, head="linear").state_dict(), h)
    with pytest.raises(UserError, match="missing keys: fc.bias, fc.weight"):
        create_imagenet_model("resnet18", weights_file=h)


def test_unreadable_or_missing_weights_file(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(UserError, match="weights file .* is corrupt or truncated"):
        create_imagenet_model("resnet18", weights_file=bad)
    with pytest.raises(UserError, match="does not exist"):
        create_imagenet_model("resnet18", weights_file=tmp_path / "nope.pth")


def test_failed_torchvision_download_is_a_user_error(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache: the download path really runs
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError, match=r"could not download weights for resnet18: .*--weights-file FILE"):
        create_imagenet_model("resnet18", weights="DEFAULT")
    with pytest.raises(UserError, match="could not download weights"):
        create_classifier("resnet18", 10, pretrained=True)


def test_failed_timm_download_is_a_user_error(monkeypatch):
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise OSError("cannot reach huggingface.co")

    # Patched at timm's loader so the test never waits on Hugging Face retries.
    monkeypatch.setattr(builder, "load_state_dict_from_hf", offline)
    monkeypatch.setattr(builder, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match="could not download weights for resnet10t"):
        create_imagenet_model("timm:resnet10t", weights="DEFAULT")


def test_data_config_torchvision_weights_without_download():
    model = create_imagenet_model("resnet50", weights=None)
    cfg = data_config(model, "resnet50", "IMAGENET1K_V2")
    assert cfg["input_size"] == (3, 224, 224)
    assert cfg["crop_pct"] == pytest.approx(224 / 232)
    assert cfg["interpolation"] == "bilinear"
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert cfg["std"] == pytest.approx((0.229, 0.224, 0.225))
    v1 = data_config(model, "resnet50", "IMAGENET1K_V1")
    assert v1["crop_pct"] == pytest.approx(224 / 256)
    plain = data_config(model, "resnet50")
    assert plain["input_size"] == (3, 224, 224) and plain["crop_pct"] == pytest.approx(0.875)


def test_data_config_timm_comes_from_the_model():
    clf = create_classifier("timm:resnet10t", 3)
    cfg = data_config(clf, "timm:resnet10t")
    assert set(cfg) == {"input_size", "mean", "std", "crop_pct", "interpolation"}
    assert cfg["input_size"] == tuple(clf.base.pretrained_cfg["input_size"])
    assert cfg["interpolation"] == clf.base.pretrained_cfg["interpolation"]


def test_drop_path_sets_the_stochastic_depth_rate():
    from timm.layers import DropPath
    from torchvision.ops import StochasticDepth

    def rates(model, cls, attr):
        return [getattr(m, attr) for m in model.modules() if isinstance(m, cls)]

    default = rates(create_classifier("efficientnet_b0", 3), StochasticDepth, "p")
    assert max(default) == pytest.approx(0.2 * 15 / 16)  # torchvision's linear ramp to 0.2
    assert set(rates(create_classifier("efficientnet_b0", 3, drop_path=0.0), StochasticDepth, "p")) == {0.0}
    assert max(rates(create_classifier("timm:efficientnet_b0", 3, drop_path=0.1), DropPath, "drop_prob")) > 0
    with pytest.raises(UserError, match="no stochastic depth"):
        create_classifier("resnet18", 3, drop_path=0.1)


@pytest.mark.parametrize("name, blocks", [("efficientnet_b0", 9), ("timm:efficientnet_b0", 9), ("resnet18", 8),
                                          ("timm:resnet10t", 4)])
def test_zero_init_last_zeroes_one_batchnorm_per_residual_block(name, blocks):
    def zero_weights(model):
        return [k for k, p in model.state_dict().items() if k.endswith(".weight") and not p.any()]

    assert len(zero_weights(create_classifier(name, 3, zero_init_last=True))) == blocks
    if not name.startswith("timm:resnet"):  # timm's ResNets zero-init by default
        assert zero_weights(create_classifier(name, 3)) == []


def test_zero_init_last_residual_blocks_start_as_identity():
    from torchvision.models.efficientnet import MBConv

    model = create_classifier("efficientnet_b0", 3, drop_path=0.0, zero_init_last=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, MBConv) and m.use_res_connect]
    for block in blocks:
        x = torch.randn(2, block.block[0][0].in_channels, 8, 8)
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)  # the branch adds exactly 0


def test_zero_init_last_refuses_trained_weights_and_unknown_blocks(tmp_path):
    with pytest.raises(UserError, match="random init"):
        create_classifier("resnet18", 3, pretrained=True, zero_init_last=True)
    with pytest.raises(UserError, match="random init"):
        create_classifier("resnet18", 3, weights_file=tmp_path / "w.pth", zero_init_last=True)
    with pytest.raises(UserError, match="no residual blocks known in squeezenet1_0"):
        create_classifier("squeezenet1_0", 3, zero_init_last=True)
