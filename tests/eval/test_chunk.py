"""Evaluation chunks: images per forward pass, from the model's own activations."""

from core.config import RunConfig
from core.eval.chunk import eval_chunk
from core.models import build_model


def test_evaluation_chunks_are_sized_by_memory():
    small = build_model(RunConfig().with_overrides(["model.width=8"]), 10, "projection")
    assert eval_chunk(small, 16, 256) == 512  # digits: nowhere near the budget
    wide = build_model(RunConfig().with_overrides(["model.width=64"]), 10, "projection")
    chunk = eval_chunk(wide, 112, 64)  # 64 ch x 112^2 x 4 B = 3.2 MB per image: 64 MiB holds ~10
    assert 16 <= chunk < 64 and chunk == max(16, (64 << 20) // (2 * 64 * 112 * 112 * 4))
