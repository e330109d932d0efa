"""Robustness metrics on a frozen encoder: corrupted evaluation images at 5 severities and
label-scarce (k labels per class) nearest-prototype probes.

The corruptions are vectorised torch re-implementations of a subset of Hendrycks & Dietterich's
CIFAR-10-C corruptions with their CIFAR severity parameters (images in [0, 1]); they run on the
whole evaluation set in milliseconds, which is what the default study needs on a laptop.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.registry import CORRUPTION_SUITES

# CIFAR-10-C parameters, severity 1..5 (Hendrycks & Dietterich 2019, make_cifar_c.py)
SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
}
CORRUPTIONS = tuple(SEVERITY_PARAMS)
SEVERITIES = range(1, 6)

# corrupted versions of a batch of uint8 [N, H, W, C] images: (images, corruption names, their stable ids,
# in parallel Ray tasks, a core.progress.Progress advanced per set or None, a cache every node reaches or None)
#   -> {(corruption, severity): corrupted images}
MakeCorrupted = Callable[[np.ndarray, tuple[str, ...], np.ndarray, bool, object, "str | None"],
                         dict[tuple[str, int], np.ndarray]]


@dataclass(frozen=True)
class CorruptionSuite:
    """A suite ``eval.corruption_suite`` can name: its corruption types, how a batch's corrupted versions
    are made, and what evaluating a split with it costs."""

    name: str
    corruptions: tuple[str, ...]  # the types evaluated by default (the benchmark's)
    make: MakeCorrupted
    references: tuple[str, ...] = ()  # published per-type errors it can be normalised by (eval.reference_errors)
    cached: bool = False  # made once per split and cached on disk (a study builds it before its trials)
    generated_limit: int | None = None  # test images above which it must be read from eval.corruption_root
    extra: tuple[str, ...] = ()  # further types eval.corruptions may name (CIFAR-10-C's 4 extra ones)
    made_for: int | None = None  # px: the image size its parameters were chosen for (None: any)
    title: str = ""  # how reports name it

    def size_note(self, image_size: int) -> str:
        """A warning when the images are far (over 2x either way) from the size the suite was made for: its
        severities then mean something else than in the papers that report it; empty otherwise."""
        if self.made_for is None or self.made_for / 2 <= image_size <= self.made_for * 2:
            return ""
        return (f"the {self.name} suite was made for {self.made_for} px images and is used here at {image_size} px: "
                f"its severities are not the ones the papers report")


def _make_fast(images: np.ndarray, names: tuple[str, ...], index: np.ndarray, parallel: bool = False,
               bar=None, shared: str | None = None) -> dict[tuple[str, int], np.ndarray]:
    x = torch.from_numpy(images)
    out = {(n, s): corrupt(x, n, s, seed=0, index=index).numpy() for n in names for s in SEVERITIES}
    if bar is not None:
        bar.update(len(out))
    return out


def _blur(x: Tensor, sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    k = torch.exp(-(torch.arange(-radius, radius + 1, dtype=x.dtype) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.device)
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _sample_generators(seed: int, name: str, severity: int, index: np.ndarray) -> list[torch.Generator]:
    """One generator per image, seeded by (seed, corruption, severity, the image's stable id)."""
    from core.data.seeded_draws import sample_keys

    base = zlib.crc32(f"{seed}/{name}/{severity}".encode())
    return [torch.Generator().manual_seed(int(k) >> 1) for k in sample_keys(np.asarray(index), base)]


def _noise(x: Tensor, gens: list[torch.Generator], draw) -> Tensor:
    return torch.stack([draw(x[i], g) for i, g in enumerate(gens)]) if len(gens) else x


def corrupt(images: Tensor, name: str, severity: int, seed: int = 0, index: np.ndarray | None = None) -> Tensor:
    """Corrupt uint8 ``[N, H, W, C]`` images; returns uint8 of the same shape. Each image's noise is
    seeded by its stable sample id (``index``; by default its position), so an image is corrupted the
    same way whatever batch it comes in."""
    if name not in SEVERITY_PARAMS:
        raise ValueError(f"unknown corruption {name!r} (known: {list(CORRUPTIONS)})")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be in 1..5, got {severity}")
    c = SEVERITY_PARAMS[name][severity - 1]
    index = np.arange(len(images)) if index is None else np.asarray(index)
    gens = _sample_generators(seed, name, severity, index) if name in _NOISY else []
    x = images.permute(0, 3, 1, 2).float() / 255.0
    if name == "gaussian_noise":
        x = x + c * _noise(x, gens, lambda xi, g: torch.randn(xi.shape, generator=g))
    elif name == "shot_noise":
        x = _noise(x, gens, lambda xi, g: torch.poisson(xi * c, generator=g)) / c
    elif name == "impulse_noise":
        u = _noise(x, gens, lambda xi, g: torch.rand(xi.shape, generator=g))
        x = torch.where(u < c / 2, torch.zeros_like(x), torch.where(u > 1 - c / 2, torch.ones_like(x), x))
    elif name == "gaussian_blur":
        x = _blur(x, c)
    elif name == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean
    elif name == "brightness":  # ImageNet-C adds c to the HSV value channel; adding to RGB is the gray-image case
        x = x + c
    elif name == "pixelate":
        h, w = x.shape[-2:]
        small = F.interpolate(x, size=(max(1, int(h * c)), max(1, int(w * c))), mode="area")
        x = F.interpolate(small, size=(h, w), mode="nearest")
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


_NOISY = ("gaussian_noise", "shot_noise", "impulse_noise")


def prototype_accuracy(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, test_labels: Tensor,
                       shots: int, draws: int = 5, seed: int = 0) -> tuple[float, float]:
    """Accuracy (%) of a nearest-class-mean classifier (cosine) built from ``shots`` labelled
    train images per class; mean and standard deviation over ``draws`` random label draws."""
    rng = np.random.default_rng(seed)
    labels_np = train_labels.numpy()
    classes = np.unique(labels_np)
    test = F.normalize(test_feats.float(), dim=1)
    feats = F.normalize(train_feats.float(), dim=1)
    accs = []
    for _ in range(draws):
        protos = []
        for c in classes:
            idx = np.flatnonzero(labels_np == c)
            pick = rng.choice(idx, size=min(shots, idx.size), replace=False)
            protos.append(feats[pick].mean(0))
        pred = torch.from_numpy(classes)[(test @ F.normalize(torch.stack(protos), dim=1).T).argmax(1)]
        accs.append(100.0 * (pred == test_labels).float().mean().item())
    return float(np.mean(accs)), float(np.std(accs))


def mean_corruption_error(acc: dict[tuple[str, int], float]) -> float:
    """Mean top-1 error (%) over every (corruption, severity) measured (unnormalised mCE)."""
    if not acc:
        raise ValueError("no corruption accuracies to average")
    return float(np.mean([100.0 - a for a in acc.values()]))


# AlexNet's top-1 error (%) per ImageNet-C type, averaged over the 5 severities: the reference of the
# ImageNet-C paper's mCE (Hendrycks & Dietterich 2019; the values of github.com/hendrycks/robustness)
REFERENCE_ERRORS = {"alexnet": {
    "gaussian_noise": 88.6428, "shot_noise": 89.4468, "impulse_noise": 92.2640, "defocus_blur": 81.9880,
    "glass_blur": 82.6268, "motion_blur": 78.5948, "zoom_blur": 79.8360, "snow": 86.6816, "frost": 82.6572,
    "fog": 81.9324, "brightness": 56.4592, "contrast": 85.3204, "elastic_transform": 64.6056, "pixelate": 71.7840,
    "jpeg_compression": 60.6500}}


def reference_mce(acc: dict[tuple[str, int], float], reference: str) -> float:
    """The ImageNet-C paper's mCE (%): per type, the error summed over severities divided by the reference
    model's (its mean error x the severities measured), averaged over types; 100 = as the reference."""
    errors = REFERENCE_ERRORS[reference]
    missing = sorted({n for n, _ in acc} - set(errors))
    if missing:
        raise ValueError(f"no {reference} reference error for {missing}")
    ce = []
    for name in sorted({n for n, _ in acc}):
        sev = [100.0 - a for (n, s), a in acc.items() if n == name]
        ce.append(sum(sev) / (errors[name] * len(sev)))
    return 100.0 * float(np.mean(ce))


def normalized_corruption_errors(acc: dict[tuple[str, int], float], clean_acc: float,
                                 base_acc: dict[tuple[str, int], float], base_clean_acc: float) -> dict[str, float]:
    """ImageNet-C's mCE and relative mCE (%) against a baseline model (Hendrycks & Dietterich 2019):
    CE_c = sum_s E(c,s) / sum_s E_base(c,s); relative CE_c = sum_s (E(c,s) - E_clean) /
    sum_s (E_base(c,s) - E_base_clean); each averaged over corruptions c. 100 = as the baseline."""
    if set(acc) != set(base_acc) or not acc:
        raise ValueError("model and baseline must be measured on the same (corruption, severity) pairs")
    ce, rel = [], []
    for name in sorted({n for n, _ in acc}):
        sev = [s for n, s in acc if n == name]
        err = np.array([100.0 - acc[(name, s)] for s in sev])
        base = np.array([100.0 - base_acc[(name, s)] for s in sev])
        ce.append(err.sum() / base.sum())
        rel.append((err - (100.0 - clean_acc)).sum() / (base - (100.0 - base_clean_acc)).sum())
    return {"mce": 100.0 * float(np.mean(ce)), "relative_mce": 100.0 * float(np.mean(rel))}


CORRUPTION_SUITES.register("fast", CorruptionSuite(  # 7 CIFAR-10-C types in vectorised torch: milliseconds, no cache
    "fast", CORRUPTIONS, _make_fast, made_for=32, title="7 CIFAR-10-C types in torch (fast)"))
