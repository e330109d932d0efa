"""Backbones by name: the platform's own (``small_cnn``, ``resnet18``, ``resnet50``), any torchvision
classification model (``torchvision:<name>``) and any timm model (``timm:<name>``). Nothing is ever
downloaded: every model is built with random weights (``model.weights`` loads a local file).

Each backbone maps ``[B, 3, S, S]`` to features ``[B, D]`` and declares what it needs:
``feature_dim``, ``fixed_input_size`` (ViTs take one image size), and ``dropped_keys``: the
constructor's state_dict keys this backbone lacks (its classifier, replaced by the identity), so an
exported state_dict loads into the constructor with only those missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
from torch import nn

from core.errors import ConfigError, DataError
from core.models.encoders import SmallCNN
from core.registry import BACKBONES

RESNET_FAMILY = re.compile(r"(resnet|resnext|wide_resnet)\d")  # torchvision models whose stem the CIFAR stem replaces


def cifar_stem(net: nn.Module) -> None:
    """SupContrast/VarContrast's stem for 32 px inputs: a 3x3 stride-1 conv and no max-pool."""
    net.conv1 = nn.Conv2d(3, net.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()


def _rescale(net: nn.Module, width: int) -> None:
    """A torchvision ResNet rebuilt with base width ``width`` (its stages 1, 2, 4 and 8 times it), through
    torchvision's own ``_make_layer``."""
    block = type(net.layer1[0])
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    for i, layer in enumerate((net.layer1, net.layer2, net.layer3, net.layer4)):
        setattr(net, f"layer{i + 1}", net._make_layer(block, width * 2 ** i, len(layer), stride=1 if i == 0 else 2))
    net.fc = nn.Linear(width * 8 * block.expansion, net.fc.out_features)


def _declare(net: nn.Module, feature_dim: int, fixed: int | None = None, dropped: tuple[str, ...] = ()) -> nn.Module:
    net.feature_dim, net.fixed_input_size, net.dropped_keys = int(feature_dim), fixed, tuple(dropped)
    return net


def _without_classifier(net: nn.Module, name: str) -> tuple[int, tuple[str, ...]]:
    """Replace the model's last Linear (its classifier) by the identity; its input size and state keys."""
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"model.backbone={name}: the model has no linear classifier to replace (a convolutional "
                          f"head such as SqueezeNet's); choose another backbone")
    path, layer = linears[-1]
    parent = net.get_submodule(path.rsplit(".", 1)[0]) if "." in path else net
    setattr(parent, path.rsplit(".", 1)[-1], nn.Identity())
    return layer.in_features, tuple(f"{path}.{k}" for k, _ in layer.named_parameters())


def _torchvision(name: str, stem: str) -> nn.Module:
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ConfigError(f"model.backbone=torchvision:{name}: not a torchvision classification model "
                          f"(torchvision.models.list_models(module=torchvision.models))")
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    net = torchvision.models.get_model(name, weights=None, **kwargs)
    if stem == "cifar":
        if not RESNET_FAMILY.match(name):
            raise ConfigError(f"model.stem=cifar applies to ResNets only, not torchvision:{name}; set model.stem=imagenet")
        cifar_stem(net)
    dim, dropped = _without_classifier(net, f"torchvision:{name}")
    return _declare(net, dim, getattr(net, "image_size", None), dropped)


def _timm(name: str, stem: str) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model.backbone=timm:{name} needs timm: pip install -e '.[models]'") from None
    if stem == "cifar":
        raise ConfigError(f"model.stem=cifar applies to the built-in and torchvision ResNets, not timm:{name}; "
                          f"set model.stem=imagenet")
    try:
        net = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise ConfigError(f"model.backbone=timm:{name}: {exc}") from None
    patch = getattr(net, "patch_embed", None)
    fixed = None
    if patch is not None and getattr(patch, "strict_img_size", False) and not getattr(patch, "dynamic_img_size", False):
        fixed = int(patch.img_size[0])
    # a pre-logits head (MobileNetV3's conv_head) makes the output wider than num_features
    return _declare(net, getattr(net, "head_hidden_size", None) or net.num_features, fixed)


def _builtin_resnet(name: str, stem: str, width: int = 64) -> nn.Module:
    """torchvision's ResNet-18/50, its channels scaled to base ``width`` (64: torchvision's own); the
    module names stay torchvision's, so its state_dict keys are the library's."""
    net = {"resnet18": torchvision.models.resnet18, "resnet50": torchvision.models.resnet50}[name](weights=None)
    if width != 64:
        _rescale(net, width)
    if stem == "cifar":
        cifar_stem(net)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return _declare(net, dim, dropped=("fc.weight", "fc.bias"))


@dataclass(frozen=True)
class BackboneKind:
    """A backbone ``model.backbone`` can name (``torchvision:`` and ``timm:`` stand for every model of
    their library): ``build(name, stem, width)`` gives the module with its declared needs."""

    name: str
    build: Callable[[str, str, int], nn.Module]
    summary: str = ""


def _small_cnn(name: str, stem: str, width: int | None) -> nn.Module:
    net = SmallCNN(3, width or 32)
    return _declare(net, net.feature_dim)


for _kind in (BackboneKind("small_cnn", _small_cnn, "the platform's small CNN (model.width channels)"),
              BackboneKind("resnet18", lambda n, s, w: _builtin_resnet(n, s, w or 64),
                           "ResNet-18 (model.stem cifar/imagenet, model.resnet_width)"),
              BackboneKind("resnet50", lambda n, s, w: _builtin_resnet(n, s, w or 64),
                           "ResNet-50 (model.stem cifar/imagenet, model.resnet_width)"),
              BackboneKind("torchvision:", lambda n, s, w: _torchvision(n.split(":", 1)[1], s),
                           "any torchvision classification model, its classifier the identity"),
              BackboneKind("timm:", lambda n, s, w: _timm(n.split(":", 1)[1], s),
                           "any timm model, num_classes=0 (pip install -e '.[models]')")):
    BACKBONES.register(_kind.name, _kind)


def build_backbone(name: str, stem: str = "cifar", width: int | None = None) -> nn.Module:
    """The backbone ``name`` names (see the module docstring), with its declared needs as attributes;
    ``width``: its base channel count (None: the backbone's own, 32 for small_cnn, 64 for the ResNets)."""
    return BACKBONES.get(name).build(name, stem, width)


def check_input(backbone: nn.Module, name: str, image_size: int) -> None:
    """Refuse an image size the backbone cannot take, naming both: its declared fixed size, else one
    forward pass on a single image (cheap) tells."""
    fixed = getattr(backbone, "fixed_input_size", None)
    if fixed is not None and fixed != image_size:
        raise ConfigError(f"model.backbone={name} takes {fixed} px inputs, but data.image_size={image_size}")
    was = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(torch.zeros(1, 3, image_size, image_size))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"model.backbone={name} cannot take data.image_size={image_size} inputs: "
                          f"{str(exc).splitlines()[0][:200]}") from None
    finally:
        backbone.train(was)
    if out.shape != (1, backbone.feature_dim):
        raise ConfigError(f"model.backbone={name} gives features of shape {tuple(out.shape)[1:]}, expected "
                          f"({backbone.feature_dim},)")


def load_weights(backbone: nn.Module, path: str, name: str) -> None:
    """Load a local state_dict into the backbone, strictly; the constructor's classifier keys (which this
    backbone lacks) are dropped if the file has them. Missing and unexpected keys are listed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"model.weights={path!r} does not exist") from None
    except Exception as exc:
        raise DataError(f"model.weights={path!r} is not a state_dict torch can load safely ({type(exc).__name__})") \
            from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"model.weights={path!r} must hold a state_dict (parameter name -> tensor)")
    state = {k: v for k, v in state.items() if k not in getattr(backbone, "dropped_keys", ())}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(f"model.weights={path!r} does not fit {name}: missing {missing[:8]}"
                        f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                        f"{'...' if len(unexpected) > 8 else ''}")
