"""CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich 2019) made here: the 15 benchmark corruption types and
the 4 extra ones (speckle noise, gaussian blur, spatter, saturate) at 5 severities, with the parameters
of ``make_cifar_c.py`` (hendrycks/robustness, ``ImageNet-C/create_c/``), which the released ``.npy``
files were made with; they were chosen for 32 px images.

Each image is corrupted with its own seed (a hash of seed, corruption, severity and its stable sample
id), so a corrupted set does not depend on the batch it was made in. Where the original called
ImageMagick (motion blur, the snow layer's blur) this uses the numpy motion-blur kernel of the maintained
``imagecorruptions`` fork, and its bundled frost pictures; everything else follows the original's
operations and parameters (each function's ``c`` is the original's table). A result is truncated to
uint8 as the original's ``np.uint8(...)`` did. The released files themselves are read by
``eval.corruption_root`` (``core.eval.corrupted``).
"""

from __future__ import annotations

import functools
import importlib.resources
from io import BytesIO
from typing import Callable

import numpy as np

from core.eval.corruption_cache import cached_suite, image_seed
from core.eval.robustness import CorruptionSuite
from core.registry import CORRUPTION_SUITES

BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
             "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
             "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
MADE_FOR = 32  # px: the image size make_cifar_c.py's parameters were chosen for
GENERATED_LIMIT = 20_000  # test images the suite generates (CIFAR's test split: 10,000)

# make_cifar_c.py's parameters, severity 1..5
PARAMS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # sigma, max delta, iterations
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk radius, alias blur
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # radius, sigma
    "zoom_blur": tuple(np.arange(1, stop, 0.01) for stop in (1.06, 1.11, 1.16, 1.21, 1.26)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
}  # elastic_transform: fractions of the image size (alpha, sigma, affine jitter), as the original's IMSIZE * (...)

Corruption = Callable[[np.ndarray, object, int], np.ndarray]  # (uint8 [H, W, 3], c, seed) -> float [H, W, 3] in 0..255


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    return gaussian(x, sigma=sigma, channel_axis=-1 if x.ndim == 3 else None)


def _clipped_zoom(img: np.ndarray, factor: float) -> np.ndarray:
    """The centre ``1/factor`` of ``img`` zoomed back to its size (make_cifar_c.py's clipped_zoom)."""
    from scipy.ndimage import zoom

    h = img.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    out = zoom(img[top:top + ch, top:top + ch], (factor, factor, 1), order=1)
    trim = (out.shape[0] - h) // 2
    return out[trim:trim + h, trim:trim + h]


def _hsv(x: np.ndarray, channel: int, scale: float, shift: float) -> np.ndarray:
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(x / 255.0)
    hsv[..., channel] = np.clip(hsv[..., channel] * scale + shift, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


def gaussian_noise(x, c, seed):
    return np.clip(x / 255.0 + np.random.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, c, seed):
    return np.clip(np.random.poisson(x / 255.0 * c) / c, 0, 1) * 255


def impulse_noise(x, c, seed):
    from skimage.util import random_noise

    return np.clip(random_noise(x / 255.0, mode="s&p", amount=c, rng=seed), 0, 1) * 255


def speckle_noise(x, c, seed):
    x = x / 255.0
    return np.clip(x + x * np.random.normal(size=x.shape, scale=c), 0, 1) * 255


def gaussian_blur(x, c, seed):
    return np.clip(_gaussian(x / 255.0, c), 0, 1) * 255


def glass_blur(x, c, seed):
    from imagecorruptions.corruptions import _shuffle_pixels_njit_glass_blur

    sigma, delta, iterations = c
    x = np.uint8(_gaussian(x / 255.0, sigma) * 255)
    x = _shuffle_pixels_njit_glass_blur(x.shape[0], x.shape[1], x, (sigma, delta, iterations), seed)
    return np.clip(_gaussian(x / 255.0, sigma), 0, 1) * 255


def defocus_blur(x, c, seed):
    import cv2
    from imagecorruptions.corruptions import disk

    kernel = disk(radius=c[0], alias_blur=c[1])
    x = x / 255.0
    return np.clip(np.stack([cv2.filter2D(x[..., d], -1, kernel) for d in range(3)], -1), 0, 1) * 255


def motion_blur(x, c, seed):
    from imagecorruptions.corruptions import _motion_blur

    return np.clip(_motion_blur(x, radius=c[0], sigma=c[1], angle=np.random.uniform(-45, 45)), 0, 255)


def zoom_blur(x, c, seed):
    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for factor in c:
        out += _clipped_zoom(x, factor)
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


def _plasma(size: int, decay: float) -> np.ndarray:
    from imagecorruptions.corruptions import plasma_fractal

    return plasma_fractal(mapsize=1 << max(0, int(np.ceil(np.log2(size)))), wibbledecay=decay)


def fog(x, c, seed):
    h, w = x.shape[:2]
    x = x / 255.0
    top = x.max()
    x = x + c[0] * _plasma(max(h, w), c[1])[:h, :w][..., None]
    return np.clip(x * top / (top + c[0]), 0, 1) * 255


@functools.cache
def _frost_pictures() -> tuple[np.ndarray, ...]:
    """The original's first five frost pictures (``imagecorruptions``' copies), scaled by 0.2 as for CIFAR, RGB."""
    import cv2

    root = importlib.resources.files("imagecorruptions") / "frost"
    out = []
    for name in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"):
        with importlib.resources.as_file(root / name) as path:
            picture = cv2.imread(str(path))
        out.append(cv2.resize(picture, (0, 0), fx=0.2, fy=0.2)[..., ::-1])
    return tuple(out)


def frost(x, c, seed):
    h, w = x.shape[:2]
    picture = _frost_pictures()[np.random.randint(5)]
    top, left = np.random.randint(0, picture.shape[0] - h), np.random.randint(0, picture.shape[1] - w)
    return np.clip(c[0] * x + c[1] * picture[top:top + h, left:left + w], 0, 255)


def snow(x, c, seed):
    import cv2
    from imagecorruptions.corruptions import _motion_blur

    h, w = x.shape[:2]
    x = x.astype(np.float32) / 255.0
    layer = np.random.normal(size=(h, w), loc=c[0], scale=c[1])
    layer = _clipped_zoom(layer[..., None], c[2])
    layer[layer < c[3]] = 0
    layer = np.round(np.clip(layer.squeeze(-1), 0, 1) * 255) / 255.0  # through 8 bits, as the original's PNG
    layer = _motion_blur(layer, radius=c[4], sigma=c[5], angle=np.random.uniform(-135, -45))
    layer = (np.round(np.clip(layer, 0, 1) * 255) / 255.0)[..., None]
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(h, w, 1)
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def spatter(x, c, seed):
    import cv2

    x = x.astype(np.float32) / 255.0
    liquid = _gaussian(np.random.normal(size=x.shape[:2], loc=c[0], scale=c[1]), c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:  # water: pale turquoise drops with an embossed rim
        liquid = (liquid * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liquid, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = cv2.cvtColor(liquid * dist, cv2.COLOR_GRAY2BGRA)
        m /= np.max(m, axis=(0, 1))
        m *= c[4]
        color = np.concatenate([np.full_like(m[..., :1], v / 255.0) for v in (175, 238, 238)], axis=2)
        color = cv2.cvtColor(color, cv2.COLOR_BGR2BGRA)
        x = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
        return cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
    m = _gaussian(np.where(liquid > c[3], 1, 0).astype(np.float32), c[4])  # mud: brown blots
    m[m < 0.8] = 0
    color = np.concatenate([np.full_like(x[..., :1], v / 255.0) for v in (63, 42, 20)], axis=2) * m[..., None]
    return np.clip(x * (1 - m[..., None]) + color, 0, 1) * 255


def contrast(x, c, seed):
    x = x / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def brightness(x, c, seed):
    return _hsv(x, 2, 1.0, c)


def saturate(x, c, seed):
    return _hsv(x, 1, c[0], c[1])


def jpeg_compression(x, c, seed):
    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=c)
    return np.asarray(Image.open(buffer).convert("RGB"))


def pixelate(x, c, seed):
    from PIL import Image

    h, w = x.shape[:2]
    small = Image.fromarray(x).resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


def elastic_transform(x, c, seed):
    import cv2
    from scipy.ndimage import map_coordinates
    from skimage.filters import gaussian

    size = min(x.shape[:2])
    alpha, sigma, jitter = (size * v for v in c)
    image = x.astype(np.float32) / 255.0
    shape = image.shape
    centre, square = np.float32(shape[:2]) // 2, min(shape[:2]) // 3
    pts1 = np.float32([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    pts2 = pts1 + np.random.uniform(-jitter, jitter, size=pts1.shape).astype(np.float32)
    image = cv2.warpAffine(image, cv2.getAffineTransform(pts1, pts2), shape[1::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx, dy = ((gaussian(np.random.uniform(-1, 1, size=shape[:2]), sigma, mode="reflect", truncate=3) * alpha)
              .astype(np.float32)[..., None] for _ in range(2))
    xx, yy, zz = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(yy + dy, (-1, 1)), np.reshape(xx + dx, (-1, 1)), np.reshape(zz, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1) * 255


CORRUPTIONS: dict[str, Corruption] = {name: globals()[name] for name in (*BENCHMARK, *EXTRA)}


def corrupt_cifar_c(images: np.ndarray, name: str, severity: int, seed: int = 0,
                    index: np.ndarray | None = None) -> np.ndarray:
    """Corrupt uint8 ``[N, H, W, C]`` images (C = 1 or 3) with one type at one severity; returns the same
    shape and dtype. Image i is seeded by ``index[i]`` (its stable sample id; by default its position)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown CIFAR-10-C corruption {name!r} (known: {list(CORRUPTIONS)})")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be in 1..5, got {severity}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 [N, H, W, 1|3] images, got {images.dtype} {tuple(images.shape)}")
    gray = images.shape[-1] == 1
    work = np.repeat(images, 3, axis=-1) if gray else images
    fn, c = CORRUPTIONS[name], PARAMS[name][severity - 1]
    out = np.empty_like(work)
    state = np.random.get_state()
    try:
        for i in range(len(work)):
            s = image_seed(seed, name, severity, i if index is None else int(index[i]))
            np.random.seed(s)
            out[i] = np.uint8(np.clip(fn(np.ascontiguousarray(work[i]), c, s), 0, 255))
    finally:
        np.random.set_state(state)  # leave the caller's global RNG as it was
    return np.round(out.astype(np.float32).mean(-1, keepdims=True)).astype(np.uint8) if gray else out


CORRUPTION_SUITES.register("cifar_c", CorruptionSuite(
    "cifar_c", BENCHMARK, cached_suite("cifar_c", corrupt_cifar_c), extra=EXTRA, cached=True,
    generated_limit=GENERATED_LIMIT, made_for=MADE_FOR,
    title="CIFAR-10-C (make_cifar_c.py's parameters)"))
