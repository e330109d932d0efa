import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.losses import SupConLoss, simclr_loss, supcon_loss
from tests.losses.numpy_reference import supcon_ref


def _batch(n=12, v=2, d=16, classes=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(n, v, d, generator=g, dtype=dtype), dim=-1)
    labels = torch.randint(0, classes, (n,), generator=g)
    return feats, labels


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("mode", ["all", "one"])
@pytest.mark.parametrize("v", [1, 2, 3])
def test_supcon_matches_numpy_reference(variant, mode, v):
    feats, labels = _batch(v=v, seed=v)
    for t in (0.07, 0.5):
        got = supcon_loss(feats, labels, t, variant=variant, contrast_mode=mode).item()
        want = supcon_ref(feats.numpy().astype(np.float64), labels.numpy(), t, variant, mode)
        assert got == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_base_temperature_scales_loss_and_is_off_by_default():
    feats, labels = _batch()
    plain = supcon_loss(feats, labels, 0.1)
    scaled = supcon_loss(feats, labels, 0.1, base_temperature=0.07)
    assert scaled.item() == pytest.approx(plain.item() * 0.1 / 0.07, rel=1e-6)
    assert SupConLoss(0.1)(feats, labels).item() == pytest.approx(plain.item())


def test_l_in_and_l_out_agree_with_one_positive_and_differ_with_many():
    feats, _ = _batch(n=8)
    unique = torch.arange(8)  # each anchor: exactly one positive (its other view)
    assert supcon_loss(feats, unique, 0.2, variant="in").item() == pytest.approx(
        supcon_loss(feats, unique, 0.2, variant="out").item(), rel=1e-6)
    feats, labels = _batch(n=8, classes=2)
    # Jensen: L_in <= L_out when positives > 1
    assert supcon_loss(feats, labels, 0.2, variant="in") < supcon_loss(feats, labels, 0.2, variant="out")


def test_simclr_identical_views_closed_form():
    # identical views, orthogonal images: every anchor has logits 1/t for its positive, 0 otherwise
    n, d = 6, 16
    e = torch.eye(d)[:n]
    feats = torch.stack([e, e], dim=1)
    m = 2 * n
    for t in (1.0, 0.5):
        want = -(1 / t - math.log(math.exp(1 / t) + (m - 2)))
        assert simclr_loss(feats, t).item() == pytest.approx(want, rel=1e-6)
    # "identical views give log(M-1) at t=1 with no other structure": all embeddings equal
    same = F.normalize(torch.ones(n, 2, d), dim=-1)
    assert simclr_loss(same, 1.0).item() == pytest.approx(math.log(m - 1), rel=1e-6)


def test_simclr_is_supcon_with_instance_labels():
    feats, _ = _batch()
    assert simclr_loss(feats, 0.1).item() == pytest.approx(
        supcon_loss(feats, torch.arange(feats.shape[0]), 0.1).item())


def test_singleton_classes_no_nan_and_excluded_from_mean():
    # V=1: anchors whose class has one member have no positive; they are excluded
    feats, _ = _batch(n=6, v=1)
    labels = torch.tensor([0, 0, 1, 2, 3, 4])
    feats.requires_grad_(True)
    for variant in ("out", "in"):
        loss = supcon_loss(feats, labels, 0.1, variant=variant)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()
        want = supcon_ref(feats.detach().numpy().astype(np.float64), labels.numpy(), 0.1, variant)
        assert loss.item() == pytest.approx(want, rel=1e-5)
        feats.grad = None


def test_batch_without_any_positive_raises():
    feats, _ = _batch(n=5, v=1)
    with pytest.raises(ValueError, match="no anchor in the batch has a positive"):
        supcon_loss(feats, torch.arange(5), 0.1)


@pytest.mark.parametrize("variant", ["out", "in"])
def test_supcon_gradcheck_float64(variant):
    feats, labels = _batch(n=5, v=2, d=4, classes=2, dtype=torch.float64)
    feats.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: supcon_loss(f, labels, 0.3, variant=variant), (feats,))


def test_bad_inputs_raise_clear_errors():
    feats, labels = _batch()
    with pytest.raises(ValueError, match=r"features must be \[N, V, D\]"):
        supcon_loss(feats[:, 0], labels)
    with pytest.raises(ValueError, match="labels must be"):
        supcon_loss(feats, labels[:-1])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        supcon_loss(feats, labels, 0.0)
    with pytest.raises(ValueError, match="variant"):
        supcon_loss(feats, labels, variant="mid")


def test_bf16_autocast_is_finite_and_close():
    feats, labels = _batch(n=64, d=128, classes=10)
    ref = supcon_loss(feats, labels, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = supcon_loss(feats.bfloat16(), labels, 0.1)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert got.item() == pytest.approx(ref.item(), rel=2e-2)


def test_dense_label_ids_match_unique_without_a_host_sync():
    from core.losses.ops import dense_label_ids

    labels = torch.tensor([7, 3, 7, 100, 3, 3, -1])
    _, inverse = torch.unique(labels, return_inverse=True)
    assert torch.equal(dense_label_ids(labels), inverse)
