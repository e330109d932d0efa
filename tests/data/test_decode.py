"""Decode-time crops: each view is cut from the full-resolution original, decoding a JPEG only as
far as the crop needs, and equals a reference crop of the fully decoded image."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.data.augment import crop_boxes
from core.data.decode import _draft, decode_eval, decode_view_batch, decode_views
from core.data.photos import sample_photos


def _encode(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _reference(photo: np.ndarray, box, flip: bool, size: int) -> np.ndarray:
    """Independent reference: slice the box out of the full array, antialiased resize in torch."""
    x0, y0, x1, y1 = (int(round(c)) for c in box)
    crop = torch.from_numpy(photo[y0:y1, x0:x1].copy()).permute(2, 0, 1)[None].float()
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = out[0].permute(1, 2, 0).round().clamp(0, 255).numpy().astype(np.uint8)
    return out[:, ::-1] if flip else out


@pytest.fixture(scope="module")
def photo():
    return sample_photos()[0]  # scikit-learn's china.jpg, 427 x 640


def test_png_crop_is_the_reference_crop_of_the_original(photo):
    data = _encode(photo, "PNG")
    views = decode_views(data, 123, size=64, views=2, strength=1.0, seed=0, epoch=3)
    boxes, flips = crop_boxes(np.asarray([123]), 640, 427, views=2, strength=1.0, seed=0, epoch=3)
    assert views.shape == (2, 64, 64, 3) and views.dtype == np.uint8
    for v in range(2):
        exact = Image.fromarray(photo).resize((64, 64), Image.BILINEAR, box=tuple(boxes[0, v]))
        exact = np.asarray(exact.transpose(Image.FLIP_LEFT_RIGHT) if flips[0, v] else exact)
        assert np.array_equal(views[v], exact)
        diff = np.abs(views[v].astype(int) - _reference(photo, boxes[0, v], flips[0, v], 64)).mean()
        assert diff < 4, diff
    # a crop of a copy squashed to the output size first (the old path) loses the original's detail
    squashed = np.asarray(Image.fromarray(photo).resize((64, 64), Image.BILINEAR))
    x0, y0, x1, y1 = boxes[0, 0] * np.array([64 / 640, 64 / 427, 64 / 640, 64 / 427])
    old = np.asarray(Image.fromarray(squashed).resize((64, 64), Image.BILINEAR, box=(x0, y0, x1, y1)))
    old = old[:, ::-1] if flips[0, 0] else old
    ref = _reference(photo, boxes[0, 0], flips[0, 0], 64).astype(int)
    assert np.abs(old.astype(int) - ref).mean() > 2 * np.abs(views[0].astype(int) - ref).mean()


def test_large_jpeg_decodes_only_as_far_as_the_crop_needs():
    big = np.asarray(Image.fromarray(sample_photos()[0]).resize((1600, 1068), Image.BILINEAR))
    data = _encode(big, "JPEG", quality=90)
    with Image.open(io.BytesIO(data)) as im:
        assert _draft(im, min_box_side=1068 * 0.9, size=64) == pytest.approx(1 / 8, abs=0.01)  # DCT 1/8 decode
        assert im.size[0] == 200
    views = decode_views(data, 7, size=64, views=2, strength=0.3, seed=1, epoch=0)
    boxes, flips = crop_boxes(np.asarray([7]), 1600, 1068, views=2, strength=0.3, seed=1, epoch=0)
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    for v in range(2):
        assert np.abs(views[v].astype(int) - _reference(full, boxes[0, v], flips[0, v], 64)).mean() < 6


def test_views_depend_on_the_sample_not_the_batch(photo):
    data = [_encode(photo, "JPEG", quality=90), _encode(photo[::-1].copy(), "JPEG", quality=90)]
    kw = dict(size=32, views=2, strength=0.8, seed=5, epoch=2)
    both = decode_view_batch({"bytes": data, "label": [0, 1], "index": [10, 11]}, **kw)
    alone = decode_view_batch({"bytes": data[1:], "label": [1], "index": [11]}, **kw)
    assert np.array_equal(both["views"][1], alone["views"][0])
    assert not np.array_equal(both["views"][0, 0], both["views"][0, 1])  # two different crops
    bad = decode_view_batch({"bytes": [b"\xff\xd8 junk"], "label": [0], "index": [1], "path": ["x.jpg"]}, **kw)
    assert not bad["ok"][0] and bad["path"][0] == "x.jpg"


def test_eval_view_is_resize_then_centre_crop(photo):
    data = _encode(photo, "PNG")
    got = decode_eval(data, 56, crop=0.875)
    side = 0.875 * 427
    box = ((640 - side) / 2, (427 - side) / 2, (640 + side) / 2, (427 + side) / 2)
    assert got.shape == (56, 56, 3)
    assert np.abs(got.astype(int) - _reference(photo, box, False, 56)).mean() < 4
