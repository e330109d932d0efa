import pytest
import torch

from core.config import RunConfig
from core.losses import head_of
from core.models import ContrastiveModel, build_backbone, build_model


@pytest.mark.parametrize("depth, dim", [(18, 512), (50, 2048)])
def test_resnet_stems(depth, dim):
    cifar, imagenet = build_backbone(f"resnet{depth}", "cifar"), build_backbone(f"resnet{depth}", "imagenet")
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2)
    assert cifar.feature_dim == imagenet.feature_dim == dim
    if depth == 18:
        assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, dim)


@pytest.mark.parametrize("loss, shape_last", [("supcon", 128), ("varcon", 128), ("vsupcon", 128), ("cross_entropy", 10)])
def test_heads_for_each_loss(loss, shape_last):
    cfg = RunConfig().with_overrides([f"loss.name={loss}"])
    model = build_model(cfg, 10, head_of(cfg))
    out = model(torch.randn(4, 3, 16, 16))
    assert out.z.shape == (4, shape_last)
    if loss != "cross_entropy":
        assert torch.allclose(out.z.norm(dim=1), torch.ones(4), atol=1e-5)
    if loss == "vsupcon":
        assert out.mu.shape == out.logvar.shape == (4, 128)
        model.eval()
        ev = model(torch.randn(4, 3, 16, 16))
        assert torch.allclose(ev.z, torch.nn.functional.normalize(ev.mu, dim=1))


def test_small_cnn_feature_dim_and_errors():
    enc = build_backbone("small_cnn", width=8)
    assert enc(torch.randn(2, 3, 16, 16)).shape == (2, enc.feature_dim) == (2, 32)
    with pytest.raises(ValueError, match=r"model\.backbone must be one of .*, got 'vit'"):
        build_backbone("vit")
    with pytest.raises(ValueError, match="needs num_classes"):
        ContrastiveModel(enc, "linear")
