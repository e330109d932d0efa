import pytest
import torch

from core.eval.geometry import effective_rank


def test_rank_one_embedding_has_effective_rank_one():
    direction = torch.randn(16, dtype=torch.float64)
    feats = torch.randn(100, 1, dtype=torch.float64) * direction
    assert effective_rank(feats) == pytest.approx(1.0, abs=1e-6)


def test_isotropic_embedding_has_full_effective_rank():
    q, _ = torch.linalg.qr(torch.randn(64, 64, dtype=torch.float64))
    feats = torch.cat([q, -q])  # centred, all singular values equal
    assert effective_rank(feats) == pytest.approx(64.0, rel=1e-9)


def test_two_equal_directions():
    feats = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])
    assert effective_rank(feats) == pytest.approx(2.0, rel=1e-9)
