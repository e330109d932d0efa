"""Backbones by name: any torchvision classification model, any timm model, the platform's own; each
declares what it needs, and nothing is downloaded."""

import pytest
import torch

from core.config import RunConfig
from core.errors import ConfigError, DataError
from core.losses import head_of
from core.models import build_backbone, build_model, check_backbone
from core.models.backbones import check_input, load_weights


@pytest.mark.parametrize("name, stem, dim", [
    ("torchvision:resnet18", "cifar", 512), ("torchvision:resnet18", "imagenet", 512),
    ("torchvision:mobilenet_v3_small", "imagenet", 1024), ("torchvision:efficientnet_b0", "imagenet", 1280),
    ("torchvision:regnet_y_400mf", "imagenet", 440), ("timm:resnet18", "imagenet", 512),
    ("timm:mobilenetv3_small_100", "imagenet", 1024)])
def test_library_backbones_give_features(name, stem, dim):
    net = build_backbone(name, stem)
    assert net.feature_dim == dim
    net.eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, dim)
    if name.startswith("torchvision:"):
        assert net.dropped_keys and all(k.endswith(("weight", "bias")) for k in net.dropped_keys)


def test_fixed_input_sizes_are_declared_and_checked():
    vit = build_backbone("torchvision:vit_b_16", "imagenet")
    assert vit.fixed_input_size == 224 and vit.feature_dim == 768
    with pytest.raises(ConfigError, match=r"torchvision:vit_b_16 takes 224 px inputs, but data.image_size=32"):
        check_input(vit, "torchvision:vit_b_16", 32)
    small = build_backbone("timm:vit_tiny_patch16_224", "imagenet")
    assert small.fixed_input_size == 224 and small.feature_dim == 192
    check_input(small, "timm:vit_tiny_patch16_224", 224)
    with pytest.raises(ConfigError, match="cannot take data.image_size=8 inputs"):
        check_input(build_backbone("torchvision:inception_v3", "imagenet"), "torchvision:inception_v3", 8)


@pytest.mark.parametrize("override, message", [
    ("model.backbone=vit_small_patch16_224", r"must be one of \['small_cnn', 'resnet18', 'resnet50', 'torchvision:<name>', 'timm:<name>'\]"),
    ("model.backbone=torchvision:not_a_model", "not a torchvision classification model"),
    ("model.backbone=torchvision:convnext_tiny", "model.stem=cifar applies to ResNets only"),
    ("model.backbone=timm:no_such_model_xyz", "timm:no_such_model_xyz"),
    ("model.backbone=timm:resnet18", "model.stem=cifar applies to the built-in and torchvision ResNets"),
    ("model.backbone=torchvision:squeezenet1_0", "no linear classifier"),
])
def test_bad_backbones_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        cfg = RunConfig().with_overrides([override])
        check_backbone(cfg.with_overrides(["model.stem=imagenet"]) if "squeezenet" in override else cfg)


def test_timm_missing_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda n, *a, **k: (_ for _ in ()).throw(ImportError(n))
                        if n == "timm" else real(n, *a, **k))
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[models\]'"):
        build_backbone("timm:resnet18", "imagenet")


def test_local_weights_load_strictly(tmp_path):
    import torchvision

    reference = torchvision.models.get_model("resnet18", weights=None)
    torch.save(reference.state_dict(), tmp_path / "full.pt")  # with fc: its classifier keys are dropped
    net = build_backbone("torchvision:resnet18", "imagenet")
    load_weights(net, str(tmp_path / "full.pt"), "torchvision:resnet18")
    assert torch.equal(net.conv1.weight, reference.conv1.weight)
    partial = {k: v for k, v in reference.state_dict().items() if not k.startswith("layer4")}
    partial["extra.weight"] = torch.zeros(1)
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(DataError, match=r"missing \['layer4.0.conv1.weight'.*unexpected \['extra.weight'\]"):
        load_weights(net, str(tmp_path / "partial.pt"), "torchvision:resnet18")
    with pytest.raises(DataError, match="does not exist"):
        check_backbone(RunConfig().with_overrides([f"model.weights={tmp_path / 'nope.pt'}"]))
    cfg = RunConfig().with_overrides(["model.backbone=torchvision:resnet18", "model.stem=imagenet",
                                      f"model.weights={tmp_path / 'full.pt'}"])
    assert torch.equal(build_model(cfg, 10, head_of(cfg)).encoder.conv1.weight, reference.conv1.weight)


def test_normalisation_is_the_models_and_configurable():
    cfg = RunConfig().with_overrides(["data.mean=[0.485, 0.456, 0.406]", "data.std=[0.229, 0.224, 0.225]"])
    model = build_model(cfg, 10, head_of(cfg)).eval()
    x = torch.rand(2, 3, 16, 16)
    want = model.encoder((x - torch.tensor(cfg.data.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.data.std).view(1, 3, 1, 1))
    assert torch.allclose(model.features(x), want)
    assert "mean" not in model.state_dict()  # not part of the weights: an export states it in model.json
    with pytest.raises(ConfigError, match="data.std must be > 0"):
        RunConfig().with_overrides(["data.std=[0.2, 0, 0.2]"])
    with pytest.raises(ConfigError, match="data.mean must hold 1 or 3 finite numbers"):
        RunConfig().with_overrides(["data.mean=[0.1, 0.2]"])


def test_sync_bn_needs_a_gpu_and_norms_can_skip_weight_decay():
    with pytest.raises(ConfigError, match="model.sync_bn needs use_gpu=true"):
        RunConfig().with_overrides(["model.sync_bn=true", "num_workers=2"])
    from core.train.optim import build_optimizer

    cfg = RunConfig().with_overrides(["optim.exclude_norm_bias_decay=true", "optim.optimizer=adamw"])
    model = build_model(cfg, 10, head_of(cfg))
    groups = build_optimizer(model, cfg.optim).param_groups
    no_decay = [p for g in groups if g["weight_decay"] == 0 for p in g["params"]]
    assert no_decay and all(p.ndim == 1 for p in no_decay)
    assert all(g["weight_decay"] == cfg.optim.weight_decay for g in groups if any(p.ndim > 1 for p in g["params"]))
    n = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == n  # every parameter once
