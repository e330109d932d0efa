"""Undecodable images: skipped, named once, counted, and judged over the whole pass."""

import numpy as np
import pytest

from core.data.bad_images import BadImages
from core.errors import DataError


def _batch(ok: list[bool], start: int = 0) -> dict:
    n = len(ok)
    return {"label": np.arange(n) % 3, "index": np.arange(start, start + n), "ok": np.array(ok),
            "path": np.array([f"img{start + i}.jpg" for i in range(n)])}


def test_bad_images_are_skipped_counted_and_named_then_fail_the_pass():
    bad = BadImages(max_fraction=0.2, expected=20)
    with pytest.warns(UserWarning, match="img9.jpg"):
        kept = bad.keep(_batch([True] * 9 + [False]))
    assert len(kept["label"]) == 9 and bad.paths == ["img9.jpg"] and bad.seen == 10 and bad.labels == [0]
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"6 of 20 images undecodable"):
        bad.keep(_batch([False] * 5 + [True] * 5, start=10))


def test_the_limit_is_judged_over_the_epoch_not_its_first_batch():
    """One zero-byte file among 201 images (0.5%) under a 1% limit: the first batch of 32 holding it
    (3%) must not fail the run."""
    bad = BadImages(max_fraction=0.01, expected=201, warn=False)
    bad.keep(_batch([False] + [True] * 31))
    for start in range(32, 201, 32):
        bad.keep(_batch([True] * min(32, 201 - start), start))
    bad.finish()
    assert bad.seen == 201 and len(bad.paths) == 1
    # judged at the end of a pass too: 3 of 201 is over 1%
    over = BadImages(max_fraction=0.01, warn=False)
    over.keep(_batch([False] * 3 + [True] * 198))
    with pytest.raises(DataError, match="3 of 201 images undecodable"):
        over.finish()


def test_no_limit_only_counts():
    bad = BadImages(warn=False)
    bad.keep(_batch([False] * 10))
    bad.finish()
    assert len(bad.paths) == 10
