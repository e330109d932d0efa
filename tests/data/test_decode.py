"""Decode-time crops: each view is cut from the full-resolution original, decoding a JPEG only as
far as the crop needs, and equals a reference crop of the fully decoded image."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.data.augment import crop_boxes
from core.data.decode import _draft, decode_eval, decode_eval_batch, decode_view_batch, decode_views
from core.tools.photos import sample_photos


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
        assert _draft(im, min_box_side=1068 * 0.9, size=64)[0] == pytest.approx(1 / 8, abs=0.01)  # DCT 1/8 decode
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


ODD_AND_EVEN_SIZES = [(1, 1), (1, 9), (9, 1), (2, 3), (97, 101), (499, 375), (501, 376), (375, 499), (1023, 1021),
                      (33, 65), (640, 427)]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_every_valid_image_decodes_at_every_size(fmt):
    """A DCT-reduced draft rounds odd sides on its own: boxes are scaled per axis and clamped, so no
    valid image is ever counted undecodable (the old x-scale-for-both-axes geometry failed 23 of these
    400 decodes with "box can't exceed original image size")."""
    rng = np.random.default_rng(0)
    for w, h in ODD_AND_EVEN_SIZES:
        data = _encode(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        for size in (16, 32, 64, 112, 224):
            batch = {"bytes": [data] * 4, "label": [0] * 4, "index": list(range(4)), "path": ["x"] * 4}
            views = decode_view_batch(batch, size=size, views=2, strength=1.0, seed=0, epoch=size, min_area=0.08)
            evals = decode_eval_batch(batch, size=size)
            assert views["ok"].all() and evals["ok"].all(), (w, h, size)
            assert views["views"].shape == (4, 2, size, size, 3) and evals["image"].shape == (4, size, size, 3)


def test_draft_scales_each_axis():
    data = _encode(np.full((375, 501, 3), 128, np.uint8), "JPEG", quality=90)
    with Image.open(io.BytesIO(data)) as im:
        sx, sy = _draft(im, min_box_side=300, size=64)
        assert im.size == (126, 94) and (sx, sy) == (126 / 501, 94 / 375)  # 1/4 draft: both sides rounded up


def test_a_bug_in_decoding_is_not_counted_as_a_bad_image(monkeypatch):
    import core.data.decode as decode

    monkeypatch.setattr(decode, "crop_boxes", lambda *a, **k: (_ for _ in ()).throw(ZeroDivisionError("bug")))
    data = _encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    with pytest.raises(ZeroDivisionError):
        decode_view_batch({"bytes": [data], "label": [0], "index": [0]}, size=8, views=1, strength=1.0, seed=0, epoch=0)


def _encoded_mode(array: np.ndarray, mode: str, fmt: str) -> bytes:
    image = Image.fromarray(array)
    assert image.mode == mode
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def test_16_bit_float_and_palette_images_decode_by_their_range():
    """A 16-bit PNG (I;16) used to decode to all 255 and a float TIFF (F) to all 0."""
    ramp = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    cases = {"I;16": _encoded_mode((ramp * 65535).astype(np.uint16), "I;16", "PNG"),
             "F": _encoded_mode(ramp.astype(np.float32), "F", "TIFF"),
             "I": _encoded_mode((ramp * 65535).astype(np.int32), "I", "TIFF"),
             "L": _encoded_mode((ramp * 255).astype(np.uint8), "L", "PNG")}
    palette = Image.fromarray((ramp * 255).astype(np.uint8), "L").convert("P")
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    cases["P"] = buf.getvalue()
    with Image.open(io.BytesIO(cases["I;16"])) as im:
        assert im.mode in ("I;16", "I")  # PIL reads 16-bit grayscale PNGs as I;16 (or I)
    reference = decode_eval(cases["L"], 32, crop=1.0).astype(int)
    for mode, data in cases.items():
        got = decode_eval(data, 32, crop=1.0).astype(int)
        assert 100 < got.mean() < 155 and got.min() < 20 and got.max() > 235, mode  # the ramp, not a flat image
        assert np.abs(got - reference).max() <= 2, mode
