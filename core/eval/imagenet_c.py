"""The 15 ImageNet-C corruption types (Hendrycks & Dietterich 2019) at 5 severities, through the
maintained ``imagecorruptions-imaug`` package (the original ``imagecorruptions`` 1.1.2 breaks on
NumPy 2 and scikit-image >= 0.19: ``np.float_``, ``multichannel``).

The library works on one image of at least 32 px at a time with NumPy's global RNG. Here every
image gets its own seed (a hash of seed, corruption, severity and position), so a corrupted set
is the same whatever order or batching produced it; images smaller than 32 px are upscaled
(bilinear) to 32, corrupted, and area-downsampled back. A corrupted evaluation split is built once
and cached (``core.eval.corruption_cache``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.eval.corruption_cache import cached_suite, image_seed
from core.eval.robustness import REFERENCE_ERRORS, CorruptionSuite
from core.registry import CORRUPTION_SUITES

IMAGENET_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
              "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform",
              "pixelate", "jpeg_compression")
GENERATED_LIMIT = 10_000  # test images above which the types must come from eval.corruption_root (~75 ms per image)
MIN_SIZE = 32  # the library refuses smaller images
MADE_FOR = 224  # px: the image size ImageNet-C's parameters were chosen for


def _resize(images: np.ndarray, size: int, mode: str) -> np.ndarray:
    # a Ray task's argument is a read-only view of the object store: torch warns on wrapping one
    x = torch.from_numpy(np.require(images, requirements="W")).permute(0, 3, 1, 2).float()
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    x = F.interpolate(x, size=(size, size), mode=mode, **kwargs)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def corrupt_imagenet_c(images: np.ndarray, name: str, severity: int, seed: int = 0,
                       index: np.ndarray | None = None) -> np.ndarray:
    """Corrupt uint8 ``[N, H, W, C]`` images (C = 1 or 3); returns the same shape and dtype. Image i's
    randomness is seeded by ``index[i]`` (its stable sample id; by default its position), so a
    corrupted image does not depend on the batch it came in."""
    from imagecorruptions import corrupt

    if name not in IMAGENET_C:
        raise ValueError(f"unknown ImageNet-C corruption {name!r} (known: {list(IMAGENET_C)})")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be in 1..5, got {severity}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 [N, H, W, 1|3] images, got {images.dtype} {tuple(images.shape)}")
    n, h, w, c = images.shape
    small = min(h, w) < MIN_SIZE
    work = _resize(images, MIN_SIZE, "bilinear") if small else images
    if c == 1:
        work = np.repeat(work, 3, axis=-1)
    out = np.empty_like(work)
    takes_seed = name in ("glass_blur", "impulse_noise")
    state = np.random.get_state()
    try:
        for i in range(n):
            s = image_seed(seed, name, severity, i if index is None else int(index[i]))
            np.random.seed(s)
            out[i] = corrupt(work[i], corruption_name=name, severity=severity, **({"seed": s} if takes_seed else {}))
    finally:
        np.random.set_state(state)  # leave the caller's global RNG as it was
    if c == 1:
        out = np.round(out.astype(np.float32).mean(-1, keepdims=True)).astype(np.uint8)
    return _resize(out, h, "area") if small else out


CORRUPTION_SUITES.register("imagenet_c", CorruptionSuite(
    "imagenet_c", IMAGENET_C, cached_suite("imagenet_c", corrupt_imagenet_c), references=tuple(REFERENCE_ERRORS),
    cached=True, generated_limit=GENERATED_LIMIT, made_for=MADE_FOR, title="ImageNet-C (imagecorruptions)"))
