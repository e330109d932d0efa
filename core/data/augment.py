"""Multi-view augmentation scaled by one ``strength`` in [0, 1], seeded per sample index.

Every random draw is a counter-based hash of (seed, epoch, view, draw, sample index), so a
sample gets the same views whatever the worker count, batch composition or order.

Two stages. Geometry (RandomResizedCrop + flip, :func:`crop_boxes`) is cut from the original:
for array sources by a vectorised affine grid sample on the stored images, for encoded images
at decode time (``core.data.decode``). The photometric part (colour jitter, grayscale,
RandAugment, AutoAugment) runs vectorised on whatever device the uint8 views are on: the GPU
when training on one, the CPU otherwise; AutoAugment runs per image through torchvision v2,
seeded from the same hash.

Policies (s = strength; s = 0 is the identity crop for every policy; ``augment.min_crop_area`` = a):
- simaugment: RandomResizedCrop(area in [1 - (1 - a) s, 1], aspect in [(3/4)^s, (4/3)^s]),
  flip p=0.5 s, colour jitter (0.4 s, 0.4 s, 0.4 s, 0.1 s) with p=0.8, grayscale p=0.2 s.
  At s=1 this is the SupContrast CIFAR recipe.
- autoaugment: crop + flip as above, then torchvision AutoAugment (CIFAR10 policy) with p = s.
- randaugment: crop + flip, then RandAugment(N=2, M=round(20 s)); M=10 (the default) at s=0.5;
  torchvision's op set and magnitudes, vectorised by grouping images that draw the same op.
- stacked_randaugment: simaugment followed by RandAugment(N=2, M=round(20 s)).
- none: no augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from core.data.seeded_draws import crop_boxes, sample_uniform  # noqa: F401  (re-exported)
from core.registry import AUGMENTATIONS


def to_float(images: Tensor) -> Tensor:
    """uint8 ``[B, H, W, C]`` (Ray batch layout) -> float ``[B, C, H, W]`` in [0, 1]."""
    if images.dim() != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def eval_view(images: Tensor) -> Tensor:
    """Deterministic evaluation view: ``[B, C, H, W]`` float in [0, 1] (the model normalises)."""
    return to_float(images)


def _gray(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]) if x.shape[1] == 3 else x


def _col(u: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(u).float().to(device)[:, None, None, None]


def _crop_flip(x: Tensor, boxes: np.ndarray, flips: np.ndarray) -> Tensor:
    """Vectorised crop-and-resize + horizontal flip of ``[B, C, H, W]`` via one affine grid sample
    (``boxes [B, 4]`` in pixels, ``flips [B]``)."""
    b, _, height, width = x.shape
    w, h = (boxes[:, 2] - boxes[:, 0]) / width, (boxes[:, 3] - boxes[:, 1]) / height
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / width - 1, (boxes[:, 1] + boxes[:, 3]) / height - 1
    theta = np.zeros((b, 2, 3))
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * np.where(flips, -1.0, 1.0), cx, h, cy
    grid = F.affine_grid(torch.from_numpy(theta).float().to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


_GRAY_W = np.array([0.299, 0.587, 0.114])


def _color_matrices(u, strength: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: the 3x3 colour map M (brightness, contrast slope, saturation, hue, grayscale, all
    linear in RGB) and the two scalars of the contrast offset, so that
    jitter+grayscale(x) = M x + offset_scale * mean_gray(x) (before the final clamp)."""
    apply = u(5) < 0.8
    b = 1 + (2 * u(6) - 1) * 0.4 * strength
    c = 1 + (2 * u(7) - 1) * 0.4 * strength
    sat = 1 + (2 * u(8) - 1) * 0.4 * strength
    hue = (2 * u(9) - 1) * 0.1 * strength * 2 * math.pi
    gray = u(10) < 0.2 * strength
    n = len(b)
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    g = np.broadcast_to(np.outer(np.ones(3), _GRAY_W), (n, 3, 3))  # G x = gray(x) in every channel
    saturation = sat[:, None, None] * eye + (1 - sat)[:, None, None] * g
    rot = np.zeros((n, 3, 3))
    rot[:, 0, 0], rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = 1, np.cos(hue), -np.sin(hue), np.sin(hue), np.cos(hue)
    hue_map = _FROM_YIQ_NP @ rot @ _TO_YIQ_NP
    jitter = (c * b)[:, None, None] * (hue_map @ saturation)
    m = np.where(apply[:, None, None], jitter, eye)
    m = np.where(gray[:, None, None], g @ m, m)  # grayscale after jitter (G 1 = 1 keeps the offset)
    offset = np.where(apply, (1 - c) * b, 0.0)  # contrast pulls towards the (brightened) mean gray
    return m, offset, gray


def _color(x: Tensor, u, strength: float) -> Tensor:
    """Vectorised colour jitter (p=0.8: brightness, contrast, saturation, hue in YIQ) and random
    grayscale (p=0.2 s). Every step is affine in RGB, so the whole of it is one batched 3x3 map
    plus an offset per image: a single pass over the pixels (on the GPU when x is there)."""
    if x.shape[1] != 3:
        return _color_gray(x, u, strength)
    m, offset, _ = _color_matrices(u, strength)
    dev = x.device
    b, _, h, w = x.shape
    mean_gray = x.mean((2, 3)) @ torch.from_numpy(_GRAY_W).float().to(dev)  # [B]
    shift = torch.from_numpy(offset).float().to(dev) * mean_gray
    y = torch.bmm(torch.from_numpy(m).float().to(dev), x.reshape(b, 3, h * w)) + shift[:, None, None]
    return y.clamp_(0, 1).reshape(b, 3, h, w)


def _color_gray(x: Tensor, u, strength: float) -> Tensor:
    """One-channel images: brightness and contrast (saturation, hue and grayscale do nothing)."""
    dev = x.device
    apply = _col((u(5) < 0.8).astype(np.float64), dev)
    bright = _col(1 + (2 * u(6) - 1) * 0.4 * strength, dev)
    contrast = _col(1 + (2 * u(7) - 1) * 0.4 * strength, dev)
    y = x * bright
    y = (y - y.mean((1, 2, 3), keepdim=True)) * contrast + y.mean((1, 2, 3), keepdim=True)
    return (x + apply * (y - x)).clamp_(0, 1)


_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = torch.linalg.inv(_TO_YIQ)
_TO_YIQ_NP = _TO_YIQ.double().numpy()
_FROM_YIQ_NP = np.linalg.inv(_TO_YIQ_NP)


def _per_image(x: Tensor, op: v2.Transform, seeds: np.ndarray, apply: np.ndarray) -> Tensor:
    """Run a torchvision v2 op per image, each seeded from its hash (deterministic)."""
    out = x.clone()
    as_uint8 = (x * 255).round_().to(torch.uint8)
    with torch.random.fork_rng(devices=[]):
        for i in np.flatnonzero(apply):
            torch.manual_seed(int(seeds[i]))
            img = as_uint8[i]
            if img.shape[0] == 1:
                img = img.expand(3, -1, -1)
            res = op(img).float() / 255.0
            out[i] = res[: x.shape[1]]
    return out


_RA_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
           "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")


def _ra_magnitude(op: str, bin_: int, bins: int, height: int, width: int) -> float:
    """torchvision's RandAugment augmentation space (v2.RandAugment._AUGMENTATION_SPACE)."""
    frac = bin_ / (bins - 1)
    return {"ShearX": 0.3 * frac, "ShearY": 0.3 * frac, "TranslateX": 150.0 / 331.0 * width * frac,
            "TranslateY": 150.0 / 331.0 * height * frac, "Rotate": 30.0 * frac, "Brightness": 0.9 * frac,
            "Color": 0.9 * frac, "Contrast": 0.9 * frac, "Sharpness": 0.9 * frac,
            "Posterize": float(round(8 - bin_ / ((bins - 1) / 4))), "Solarize": 1.0 - frac}.get(op, 0.0)


def _ra_apply(img: Tensor, op: str, mag: float) -> Tensor:
    """One RandAugment op on a uint8 batch ``[B, C, H, W]`` (same semantics as torchvision v2)."""
    nearest = v2.InterpolationMode.NEAREST
    if op == "ShearX":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(mag)), 0.0],
                         interpolation=nearest, center=[0, 0])
    if op == "ShearY":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(mag))],
                         interpolation=nearest, center=[0, 0])
    if op == "TranslateX":
        return TF.affine(img, angle=0.0, translate=[int(mag), 0], scale=1.0, shear=[0.0, 0.0], interpolation=nearest)
    if op == "TranslateY":
        return TF.affine(img, angle=0.0, translate=[0, int(mag)], scale=1.0, shear=[0.0, 0.0], interpolation=nearest)
    if op == "Rotate":
        return TF.rotate(img, angle=mag, interpolation=nearest)
    if op == "Brightness":
        return TF.adjust_brightness(img, 1.0 + mag)
    if op == "Color":
        return TF.adjust_saturation(img, 1.0 + mag)
    if op == "Contrast":
        return TF.adjust_contrast(img, 1.0 + mag)
    if op == "Sharpness":
        return TF.adjust_sharpness(img, 1.0 + mag)
    if op == "Posterize":
        return TF.posterize(img, bits=int(mag))
    if op == "Solarize":
        return TF.solarize(img, threshold=255.0 * mag)
    if op == "AutoContrast":
        return TF.autocontrast(img)
    if op == "Equalize":
        return TF.equalize(img)
    return img


def _randaugment(x: Tensor, u, strength: float, num_ops: int = 2, bins: int = 31) -> Tensor:
    """RandAugment(N=num_ops, M=round(20 s)) vectorised: each image's op and sign come from its
    hash stream; images sharing (op, sign) are transformed together as one batch."""
    magnitude_bin = round(20 * strength)
    gray = x.shape[1] == 1
    img = (x * 255).round_().to(torch.uint8)
    if gray:
        img = img.expand(-1, 3, -1, -1)
    h, w = img.shape[-2:]
    for slot in range(num_ops):
        op_idx = np.minimum((u(20 + 2 * slot) * len(_RA_OPS)).astype(np.int64), len(_RA_OPS) - 1)
        negative = u(21 + 2 * slot) < 0.5
        out = img.clone()
        for k, op in enumerate(_RA_OPS):
            mag = _ra_magnitude(op, magnitude_bin, bins, h, w)
            signed = op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                            "Contrast", "Sharpness")
            for neg in ((False, True) if signed else (None,)):
                sel = (op_idx == k) if neg is None else (op_idx == k) & (negative == neg)
                if sel.any():
                    i = torch.from_numpy(np.flatnonzero(sel))
                    out[i] = _ra_apply(img[i], op, -mag if neg else mag)
        img = out
    res = img.float() / 255.0
    return res[:, :1] if gray else res


@dataclass(frozen=True)
class AugmentPolicy:
    """A policy ``augment.policy`` can name: its photometric part on float ``[B, C, H, W]`` in [0, 1]
    (the crop and flip are every policy's); ``identity``: no augmentation at all."""

    name: str
    photometric: Callable[[Tensor, Callable, float], Tensor]
    identity: bool = False


def _autoaugment(y: Tensor, u, strength: float) -> Tensor:
    seeds = (u(11) * (1 << 62)).astype(np.int64)
    return _per_image(y, v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10), seeds, u(12) < strength)


for _policy in (AugmentPolicy("simaugment", lambda y, u, s: _color(y, u, s)),
                AugmentPolicy("autoaugment", _autoaugment),
                AugmentPolicy("randaugment", lambda y, u, s: _randaugment(y, u, s)),
                AugmentPolicy("stacked_randaugment", lambda y, u, s: _randaugment(_color(y, u, s), u, s)),
                AugmentPolicy("none", lambda y, u, s: y, identity=True)):
    AUGMENTATIONS.register(_policy.name, _policy)


def _photometric(y: Tensor, u, policy: str, strength: float) -> Tensor:
    """The colour/RandAugment/AutoAugment part of a policy on float ``[B, C, H, W]`` in [0, 1]."""
    return AUGMENTATIONS.get(policy).photometric(y, u, strength)


def _check(policy: str, strength: float, images: Tensor, idx: np.ndarray) -> None:
    if policy not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation policy {policy!r} (known: {list(AUGMENTATIONS.names())})")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if idx.shape != (images.shape[0],):
        raise ValueError(f"indices must be [B] with B={images.shape[0]}, got shape {idx.shape}")


def augment_views(
    images: Tensor,
    indices: Tensor | np.ndarray,
    *,
    policy: str,
    strength: float,
    views: int,
    seed: int,
    epoch: int,
    min_area: float = 0.2,
) -> Tensor:
    """uint8 ``[B, H, W, C]`` images -> float views in [0, 1] ``[B, V, C, H, W]`` on the images' device:
    crop + flip (from the stored image, which is the original for array sources) then the policy's
    photometric part."""
    idx = indices.cpu().numpy() if isinstance(indices, Tensor) else np.asarray(indices)
    _check(policy, strength, images, idx)
    x = to_float(images)
    identity = AUGMENTATIONS.get(policy).identity or strength == 0.0
    if not identity:
        boxes, flips = crop_boxes(idx, x.shape[-1], x.shape[-2], views=views, strength=strength, seed=seed,
                                  epoch=epoch, min_area=min_area)
    out = []
    for v in range(views):
        def u(draw: int, v: int = v) -> np.ndarray:
            return sample_uniform(idx, seed, epoch, v, draw)
        y = x if identity else _photometric(_crop_flip(x, boxes[:, v], flips[:, v]), u, policy, strength)
        out.append(y)
    return torch.stack(out, dim=1)


def augment_cropped(views_uint8: Tensor, indices: Tensor | np.ndarray, *, policy: str, strength: float, seed: int,
                    epoch: int) -> Tensor:
    """Views already cut at decode time (uint8 ``[B, V, S, S, C]``) -> the policy's photometric part,
    float in [0, 1] ``[B, V, C, S, S]``, vectorised on the views' device (the GPU when training on one)."""
    idx = indices.cpu().numpy() if isinstance(indices, Tensor) else np.asarray(indices)
    if views_uint8.dim() != 5:
        raise ValueError(f"views must be [B, V, S, S, C], got shape {tuple(views_uint8.shape)}")
    _check(policy, strength, views_uint8, idx)
    identity = AUGMENTATIONS.get(policy).identity or strength == 0.0
    b, nv, h, w, c = views_uint8.shape
    out = torch.empty((b, nv, c, h, w), dtype=torch.float32, device=views_uint8.device)
    for v in range(nv):
        def u(draw: int, v: int = v) -> np.ndarray:
            return sample_uniform(idx, seed, epoch, v, draw)
        if policy == "simaugment" and not identity and c == 3:
            out[:, v] = _color_hwc(views_uint8[:, v], u, strength).permute(0, 2, 1).reshape(b, c, h, w)
            continue
        y = to_float(views_uint8[:, v])
        out[:, v] = y if identity else _photometric(y, u, policy, strength)
    return out


def _color_hwc(images: Tensor, u, strength: float) -> Tensor:
    """:func:`_color` straight from uint8 ``[B, H, W, 3]`` (the decoded layout): one
    batched 3x3 map over ``[B, HW, 3]`` pixels, no layout copies; returns ``[B, HW, 3]`` in [0, 1] (the model normalises)."""
    b, h, w, _ = images.shape
    dev = images.device
    m, offset, _ = _color_matrices(u, strength)
    x = images.reshape(b, h * w, 3).float()
    mean_gray = x.mean(1) @ torch.from_numpy(_GRAY_W / 255.0).float().to(dev)  # [B], in [0, 1]
    shift = (torch.from_numpy(offset).float().to(dev) * mean_gray)[:, None, None]
    y = torch.baddbmm(shift.expand(b, 1, 3), x, torch.from_numpy(np.transpose(m, (0, 2, 1)) / 255.0).float().to(dev))
    return y.clamp_(0, 1)
