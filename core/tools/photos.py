"""An ImageNet-like folder of realistic JPEGs made from real photographs that ship inside installed
packages (scikit-learn's ``load_sample_images``, scikit-image's ``data`` module): no download.

Each image is a random crop (area 30-100%) of one of those photos, resized to ``size`` (ImageNet's
typical 500 x 375) and saved as a JPEG of the given quality, so decode and crop costs match
real data. Class ``c`` draws from photo ``c mod #photos``; the layout is ``root/<split>/<class>/*.jpg``,
sorted by class as ImageNet's folders are.
"""

from __future__ import annotations

import os

import numpy as np


def sample_photos() -> list[np.ndarray]:
    """RGB uint8 photographs bundled with scikit-learn and scikit-image."""
    from sklearn.datasets import load_sample_images

    photos = list(load_sample_images().images)
    try:
        import skimage.data as data

        for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                     "retina", "camera", "moon", "coins", "brick", "grass", "gravel", "clock", "horse"):
            try:
                im = np.asarray(getattr(data, name)())
            except Exception:  # a data file that needs a download: skip it
                continue
            if im.ndim == 2:
                im = np.repeat(im[..., None], 3, axis=-1)
            photos.append(im[..., :3].astype(np.uint8) if im.dtype == np.uint8 else
                          (255 * (im[..., :3] > 0)).astype(np.uint8))
    except ImportError:
        pass
    return photos


def make_photo_folder(root: str, classes: int = 20, per_class: dict[str, int] | None = None,
                      size: tuple[int, int] = (500, 375), quality: int = 90, seed: int = 0) -> str:
    """Write ``root/<split>/class_XX/NNNNN.jpg`` (``per_class``: images per class of each split,
    default 8 train / 2 val); returns ``root``."""
    from PIL import Image

    per_class = per_class or {"train": 8, "val": 2}
    photos = sample_photos()
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c in range(classes):
            folder = os.path.join(root, split, f"class_{c:02d}")
            os.makedirs(folder, exist_ok=True)
            photo = Image.fromarray(photos[c % len(photos)])
            w, h = photo.size
            for i in range(n):
                area = rng.uniform(0.3, 1.0)
                cw, ch = int(w * np.sqrt(area)), int(h * np.sqrt(area))
                x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                img = photo.resize(size, Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
                img.save(os.path.join(folder, f"{i:05d}.jpg"), quality=quality)
    return root
