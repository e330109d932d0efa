import math

import pytest
import torch

from core.eval.geometry import alignment, cluster_agreement, effective_rank, normalized_spectrum, uniformity


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


def test_spectrum_of_rank_one_embedding_is_one_spike():
    feats = torch.randn(50, 1, dtype=torch.float64) * torch.randn(8, dtype=torch.float64)
    s = normalized_spectrum(feats)
    assert s.sum().item() == pytest.approx(1.0) and s[0].item() == pytest.approx(1.0, abs=1e-6)


def test_alignment_closed_forms():
    z = torch.randn(32, 16)
    assert alignment(z, z) == pytest.approx(0.0, abs=1e-12)
    assert alignment(z, -z) == pytest.approx(4.0)  # ||2u||^2 for unit u
    assert alignment(z, -z, alpha=1.0) == pytest.approx(2.0)


def test_uniformity_closed_forms():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert uniformity(x) == pytest.approx(-8.0)  # one pair at squared distance 4: log exp(-2 * 4)
    square = torch.tensor([[1.0, 0], [0, 1.0], [-1.0, 0], [0, -1.0]])
    # 4 pairs at squared distance 2, 2 pairs at 4
    expected = math.log((4 * math.exp(-4) + 2 * math.exp(-8)) / 6)
    assert uniformity(square) == pytest.approx(expected)
    assert uniformity(torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0]])) > uniformity(square)  # clumped is worse


def test_cluster_agreement_recovers_separated_classes_and_not_noise():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(4, 16) * 5
    labels = torch.arange(4).repeat_interleave(30)
    feats = centres[labels] + 0.3 * torch.randn(120, 16, generator=g)
    assert cluster_agreement(feats, labels) == pytest.approx(1.0)
    noise = torch.randn(120, 16, generator=g)
    assert abs(cluster_agreement(noise, labels)) < 0.1
