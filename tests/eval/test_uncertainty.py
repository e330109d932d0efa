import numpy as np
import pytest
import torch

from core.eval.uncertainty import centroid_distance, misclassification_auroc, severity_correlation


def test_centroid_distance_closed_form():
    train = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    d = centroid_distance(train, labels, torch.tensor([[1.0, 0.05], [1.0, 1.0], [0.0, -1.0]]))
    assert d[0].item() == pytest.approx(0.0, abs=1e-6)  # on a centroid
    assert d[1].item() == pytest.approx(1 - np.cos(np.pi / 4 - np.arctan(0.05)), abs=1e-4)
    assert d[2].item() > 1.0  # opposite to one centroid, orthogonal-ish to the other


def test_auroc_perfect_reversed_and_chance():
    wrong = np.array([0, 0, 0, 1, 1, 1], dtype=bool)
    assert misclassification_auroc(np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), wrong) == 1.0
    assert misclassification_auroc(np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1]), wrong) == 0.0
    # wrong scores (.5, .1, .3) vs right (.5, .2, .9): 2 of 9 pairs ordered right, 1 tie counted half
    assert misclassification_auroc(np.array([0.5, 0.2, 0.9, 0.5, 0.1, 0.3]), wrong) == pytest.approx(2.5 / 9)
    assert np.isnan(misclassification_auroc(np.ones(3), np.zeros(3, dtype=bool)))


def test_severity_correlation_is_rank_based():
    sev = np.repeat(np.arange(6), 4)
    assert severity_correlation(np.exp(sev) + 0.0, sev) == pytest.approx(1.0)  # monotone, not linear
    assert severity_correlation(-sev, sev) == pytest.approx(-1.0)
