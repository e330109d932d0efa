"""Decode-time geometry for encoded images (JPEG/PNG bytes): each view's crop is cut from the
full-resolution original, decoding only as far as the crop needs.

The crop box and flip of every view are drawn from the per-sample hash (``core.data.augment.crop_boxes``),
so a sample's views do not depend on the worker, the batch or the order. A JPEG is decoded with
PIL's ``draft`` at the largest DCT reduction (1/2, 1/4, 1/8) that still leaves every crop at least
the output size; the draft rounds each side on its own, so boxes are scaled per axis and clamped to
the decoded image. Each box is then resized to the output with one ``resize(box=...)`` call. The
evaluation view is the standard resize-then-centre-crop (``data.eval_crop`` of the shorter side),
done the same way.

Every mode converts by its range: 16-bit (``I;16``) and 32-bit integer (``I``) images are scaled to
8 bits, float (``F``) images in [0, 1] are scaled by 255 (others clipped), palette and
grayscale-with-alpha images are expanded. Only decoder errors mark an image undecodable (``ok=False``);
any other exception is a bug and propagates.
"""

from __future__ import annotations

import io
import zlib
from typing import Any

import numpy as np

from core.data.seeded_draws import crop_boxes


def _decoder_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image

    # OSError covers PIL.UnidentifiedImageError and truncated files; SyntaxError, EOFError and zlib.error
    # are what PIL's plugins raise for damaged headers and streams
    return OSError, SyntaxError, EOFError, zlib.error, Image.DecompressionBombError


def _open(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data))


def _draft(im, min_box_side: float, size: int) -> tuple[float, float]:
    """Reduce the JPEG decode as far as the smallest box allows; returns the decoded/original scale of
    each axis (they differ when the reduction rounds an odd side)."""
    w, h = im.size
    reduce = 1
    while reduce < 8 and min_box_side / (reduce * 2) >= size:
        reduce *= 2
    if reduce > 1 and im.format == "JPEG":
        im.draft("RGB", (w // reduce, h // reduce))
    return im.size[0] / w, im.size[1] / h


def _scaled_box(box, scale: tuple[float, float], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box of the original scaled into the decoded image, clamped to it."""
    (sx, sy), (w, h) = scale, size
    x0, y0, x1, y1 = (float(c) for c in box)
    x0, x1 = min(max(x0 * sx, 0.0), w), min(max(x1 * sx, 0.0), w)
    y0, y1 = min(max(y0 * sy, 0.0), h), min(max(y1 * sy, 0.0), h)
    return x0, y0, max(x1, x0 + 1e-3), max(y1, y0 + 1e-3)


def to_rgb(im):
    """An RGB PIL image of any mode, converted by the mode's range (see the module docstring)."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        x = np.asarray(im).astype(np.int64)
        top = 255 if x.max(initial=0) <= 255 and x.min(initial=0) >= 0 else 65535 if x.max(initial=0) <= 65535 \
            else int(x.max())
        im = Image.fromarray(np.clip(np.rint(x * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        x = np.asarray(im, dtype=np.float64)
        finite = x[np.isfinite(x)]
        unit = finite.size == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0)
        x = np.nan_to_num(x * 255.0 if unit else x, nan=0.0, posinf=255.0, neginf=0.0)
        im = Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8), "L")
    return im if im.mode == "RGB" else im.convert("RGB")


def decode_views(data: bytes, index: int, *, size: int, views: int, strength: float, seed: int, epoch: int,
                 min_area: float = 0.2) -> np.ndarray:
    """``views`` crops (uint8 ``[V, size, size, 3]``) of one encoded image, each cut from the original."""
    from PIL import Image

    with _open(data) as im:
        w, h = im.size
        boxes, flips = crop_boxes(np.asarray([index]), w, h, views=views, strength=strength, seed=seed, epoch=epoch,
                                  min_area=min_area)
        boxes, flips = boxes[0], flips[0]  # [V, 4], [V]
        scale = _draft(im, float(np.min(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))), size)
        rgb = to_rgb(im)
        out = np.empty((views, size, size, 3), np.uint8)
        for v in range(views):
            crop = rgb.resize((size, size), Image.BILINEAR, box=_scaled_box(boxes[v], scale, rgb.size))
            if flips[v]:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            out[v] = np.asarray(crop)
        return out


def decode_eval(data: bytes, size: int, crop: float = 0.875) -> np.ndarray:
    """The evaluation view (uint8 ``[size, size, 3]``): the centred square of side ``crop`` x the shorter
    side, resized to ``size`` (= resize the shorter side to size/crop, then centre-crop size)."""
    from PIL import Image

    with _open(data) as im:
        w, h = im.size
        side = crop * min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        scale = _draft(im, side, size)
        rgb = to_rgb(im)
        return np.asarray(rgb.resize((size, size), Image.BILINEAR, box=_scaled_box(box, scale, rgb.size)),
                          dtype=np.uint8)


def _rest(batch: dict[str, Any], ok: list[bool]) -> dict[str, np.ndarray]:
    return {"label": np.asarray(batch["label"], np.int64), "index": np.asarray(batch["index"], np.int64),
            "ok": np.asarray(ok, dtype=bool),
            "path": np.asarray(batch["path"]) if "path" in batch else np.asarray([""] * len(ok))}


def decode_view_batch(batch: dict[str, Any], *, size: int, views: int, strength: float, seed: int, epoch: int,
                      min_area: float = 0.2) -> dict[str, np.ndarray]:
    """``map_batches`` body: encoded ``bytes`` -> uint8 ``views [B, V, S, S, 3]``; an undecodable image
    gets ``ok=False`` and zero views (the loop skips, counts and names it)."""
    errors = _decoder_errors()
    out_views, ok = [], []
    for data, index in zip(batch["bytes"], batch["index"]):
        try:
            out_views.append(decode_views(data, int(index), size=size, views=views, strength=strength, seed=seed,
                                          epoch=epoch, min_area=min_area))
            ok.append(True)
        except errors:  # corrupt, truncated, not an image: anything else is a bug and propagates
            out_views.append(np.zeros((views, size, size, 3), np.uint8))
            ok.append(False)
    return {"views": np.stack(out_views), **_rest(batch, ok)}


def decode_eval_batch(batch: dict[str, Any], *, size: int, crop: float = 0.875) -> dict[str, np.ndarray]:
    """``map_batches`` body: encoded ``bytes`` -> uint8 evaluation ``image [B, S, S, 3]`` (``ok`` as above)."""
    errors = _decoder_errors()
    images, ok = [], []
    for data in batch["bytes"]:
        try:
            images.append(decode_eval(data, size, crop))
            ok.append(True)
        except errors:
            images.append(np.zeros((size, size, 3), np.uint8))
            ok.append(False)
    return {"image": np.stack(images), **_rest(batch, ok)}
