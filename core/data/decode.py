"""Decode-time geometry for encoded images (JPEG/PNG bytes): each view's crop is cut from the
full-resolution original, decoding only as far as the crop needs.

The crop box and flip of every view are drawn from the per-sample hash (``core.data.augment.crop_boxes``),
so a sample's views do not depend on the worker, the batch or the order. A JPEG is decoded with
PIL's ``draft`` at the largest DCT reduction (1/2, 1/4, 1/8) that still leaves every crop at least
the output size; then each box is resized to the output with one ``resize(box=...)`` call. The
evaluation view is the standard resize-then-centre-crop (``data.eval_crop`` of the shorter side),
done the same way.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from core.data.augment import crop_boxes


def _open(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data))


def _draft(im, min_box_side: float, size: int) -> float:
    """Reduce the JPEG decode as far as the smallest box allows; returns the decoded/original scale."""
    w, h = im.size
    reduce = 1
    while reduce < 8 and min_box_side / (reduce * 2) >= size:
        reduce *= 2
    if reduce > 1 and im.format == "JPEG":
        im.draft("RGB", (w // reduce, h // reduce))
    return im.size[0] / w


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
        im = im.convert("RGB")
        out = np.empty((views, size, size, 3), np.uint8)
        for v in range(views):
            crop = im.resize((size, size), Image.BILINEAR, box=tuple(float(c) * scale for c in boxes[v]))
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
        im = im.convert("RGB")
        return np.asarray(im.resize((size, size), Image.BILINEAR, box=tuple(c * scale for c in box)), dtype=np.uint8)


def decode_view_batch(batch: dict[str, Any], *, size: int, views: int, strength: float, seed: int, epoch: int,
                      min_area: float = 0.2) -> dict[str, np.ndarray]:
    """``map_batches`` body: encoded ``bytes`` -> uint8 ``views [B, V, S, S, 3]``; an undecodable image
    gets ``ok=False`` and zero views (the loop skips, counts and names it)."""
    out_views, ok = [], []
    for data, index in zip(batch["bytes"], batch["index"]):
        try:
            out_views.append(decode_views(data, int(index), size=size, views=views, strength=strength, seed=seed,
                                          epoch=epoch, min_area=min_area))
            ok.append(True)
        except Exception:  # any decoder failure: corrupt, truncated, not an image
            out_views.append(np.zeros((views, size, size, 3), np.uint8))
            ok.append(False)
    return {"views": np.stack(out_views), "label": np.asarray(batch["label"], np.int64),
            "index": np.asarray(batch["index"], np.int64), "ok": np.asarray(ok),
            "path": np.asarray(batch["path"]) if "path" in batch else np.asarray([""] * len(ok))}


def decode_eval_batch(batch: dict[str, Any], *, size: int, crop: float = 0.875) -> dict[str, np.ndarray]:
    """``map_batches`` body: encoded ``bytes`` -> uint8 evaluation ``image [B, S, S, 3]`` (``ok`` as above)."""
    images, ok = [], []
    for data in batch["bytes"]:
        try:
            images.append(decode_eval(data, size, crop))
            ok.append(True)
        except Exception:
            images.append(np.zeros((size, size, 3), np.uint8))
            ok.append(False)
    return {"image": np.stack(images), "label": np.asarray(batch["label"], np.int64),
            "index": np.asarray(batch["index"], np.int64), "ok": np.asarray(ok),
            "path": np.asarray(batch["path"]) if "path" in batch else np.asarray([""] * len(ok))}
