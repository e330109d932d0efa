import math

import pytest
import torch

from core.eval.calibration import expected_calibration_error, negative_log_likelihood


def test_perfectly_calibrated_toy_has_zero_ece():
    # 10 predictions at confidence 0.8, exactly 8 correct; 10 at 0.6, exactly 6 correct
    probs = torch.tensor([[0.8, 0.2]] * 10 + [[0.6, 0.4]] * 10)
    labels = torch.tensor([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-4)  # percent; float32 inputs


def test_overconfident_toy_hand_computed():
    # all at confidence 0.9 but only half right: ECE = |0.5 - 0.9| = 40%
    probs = torch.tensor([[0.9, 0.1]] * 4)
    labels = torch.tensor([0, 1, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(40.0)
    # two bins: {0.95: 1 of 2 right} and {0.55: 2 of 2 right} -> (2/4)*0.45 + (2/4)*0.45 = 45%
    probs = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    labels = torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(45.0)


def test_nll_hand_computed_and_bad_shapes():
    probs = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    assert negative_log_likelihood(probs, torch.tensor([0, 1])) == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)
    with pytest.raises(ValueError, match="probs must be"):
        expected_calibration_error(probs[0], torch.tensor([0]))
