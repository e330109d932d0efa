import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.losses import VarConLoss, varcon_loss
from tests.losses.numpy_reference import varcon_ref


def _batch(m=16, d=8, classes=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(m, d, generator=g, dtype=dtype), dim=-1),
            torch.randint(0, classes, (m,), generator=g))


@pytest.mark.parametrize("kl_weight", [1.0, 0.0, 2.5])
@pytest.mark.parametrize("eps", [0.0, 0.02, 0.09])
def test_varcon_matches_numpy_reference(kl_weight, eps):
    z, y = _batch(seed=int(eps * 100))
    got = varcon_loss(z, y, 0.1, eps, kl_weight=kl_weight).item()
    assert got == pytest.approx(varcon_ref(z.double().numpy(), y.numpy(), 0.1, eps, kl_weight), rel=1e-5)


def test_only_present_classes_count():
    z, y = _batch(classes=3)
    shifted = torch.tensor([0, 7, 42])[y]  # same partition, arbitrary label ids
    assert varcon_loss(z, shifted).item() == pytest.approx(varcon_loss(z, y).item(), rel=1e-6)


def test_single_class_batch_is_finite_zero():
    z, _ = _batch()
    z.requires_grad_(True)
    loss = varcon_loss(z, torch.zeros(16, dtype=torch.long))
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(z.grad).all()


def test_views_wrapper_repeats_labels_per_view():
    feats = F.normalize(torch.randn(6, 2, 8), dim=-1)
    labels = torch.tensor([0, 1, 0, 2, 1, 2])
    want = varcon_loss(feats.reshape(12, 8), labels.repeat_interleave(2))
    assert VarConLoss()(feats, labels).item() == pytest.approx(want.item())


def test_centroids_are_stop_gradient():
    """With detached centroids, d loss/d z_i equals the gradient with w held constant."""
    z, y = _batch(m=10, dtype=torch.float64)
    z1 = z.clone().requires_grad_(True)
    varcon_loss(z1, y).backward()
    # same loss with centroids from a frozen copy: only the anchor path z.w carries gradient
    classes, idx = torch.unique(y, return_inverse=True)
    oh = F.one_hot(idx).double()
    w = F.normalize(oh.T @ z / oh.sum(0)[:, None], dim=1)
    z2 = z.clone().requires_grad_(True)
    log_p = F.log_softmax(z2 @ w.T / 0.1, 1)
    lpy = log_p.gather(1, idx[:, None]).squeeze(1)
    t2 = (0.08 + 0.04 * lpy.exp())
    log_q = oh / t2[:, None] - torch.logaddexp(1 / t2, torch.full_like(t2, np.log(len(classes) - 1)))[:, None]
    ((log_q.exp() * (log_q - log_p)).sum(1) - lpy).mean().backward()
    assert torch.allclose(z1.grad, z2.grad, atol=1e-12)
    # and without the stop-gradient the gradient is different
    z3 = z.clone().requires_grad_(True)
    varcon_loss(z3, y, centroid_stop_grad=False).backward()
    assert (z3.grad - z1.grad).norm() > 1e-3 * z1.grad.norm()


def test_gradient_flows_through_tau2():
    """conf (hence t2, hence q) is NOT detached: the gradient differs from a detached-t2 version."""
    z, y = _batch(m=12, dtype=torch.float64, seed=3)
    za = z.clone().requires_grad_(True)
    varcon_loss(za, y, 0.1, 0.05).backward()
    zb = z.clone().requires_grad_(True)
    classes, idx = torch.unique(y, return_inverse=True)
    oh = F.one_hot(idx).double()
    w = F.normalize(oh.T @ z / oh.sum(0)[:, None], dim=1)
    log_p = F.log_softmax(zb @ w.T / 0.1, 1)
    lpy = log_p.gather(1, idx[:, None]).squeeze(1)
    t2 = (0.05 + 0.1 * lpy.exp()).detach()
    log_q = oh / t2[:, None] - torch.logaddexp(1 / t2, torch.full_like(t2, np.log(len(classes) - 1)))[:, None]
    ((log_q.exp() * (log_q - log_p)).sum(1) - lpy).mean().backward()
    diff = (za.grad - zb.grad).norm() / za.grad.norm()
    assert diff > 1e-4  # the live path through t2 contributes


def test_varcon_gradcheck_float64():
    # finite differences also move the centroids, so check the full (no stop-gradient) derivative;
    # the stop-gradient itself is checked in test_centroids_are_stop_gradient
    z, y = _batch(m=6, d=4, dtype=torch.float64)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: varcon_loss(x, y, 0.1, 0.05, centroid_stop_grad=False), (z,))
    # and the stop-gradient version is, as intended, NOT the full derivative
    assert not torch.autograd.gradcheck(lambda x: varcon_loss(x, y, 0.1, 0.05), (z,), raise_exception=False)


def test_tiny_t2_does_not_overflow():
    z, y = _batch()
    loss = varcon_loss(z, y, 1e-4, 9.99e-5)  # t2 can approach the 1e-6 clamp: exp(1e6) in naive code
    assert torch.isfinite(loss)


def test_bad_inputs():
    z, y = _batch()
    with pytest.raises(ValueError, match="epsilon must be in"):
        varcon_loss(z, y, 0.1, 0.1)
    with pytest.raises(ValueError, match=r"z must be \[M, D\]"):
        varcon_loss(z[None], y)


def test_bf16_autocast_close_to_fp32():
    z, y = _batch(m=256, d=128, classes=10)
    ref = varcon_loss(z, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = varcon_loss(z.bfloat16(), y)
    assert torch.isfinite(got) and got.item() == pytest.approx(ref.item(), rel=2e-2)


@pytest.mark.parametrize("classes", [1, 3, 10])
def test_the_class_count_path_is_the_same_loss_and_gradient(classes):
    """Given the data set's K, the labels index K columns (7 of 10 absent here): the same loss and gradient
    as the reference and as the batch's dense ids, through all of VarCon's terms."""
    z, y = _batch(m=24, classes=classes, seed=classes)
    grads, losses = [], []
    for k in (None, 10, 50):
        zz = z.clone().requires_grad_(True)
        loss = varcon_loss(zz, y, 0.1, 0.05, kl_weight=1.5, num_classes=k)
        loss.backward()
        losses.append(loss.item())
        grads.append(zz.grad)
        assert torch.isfinite(zz.grad).all(), k
    assert losses[0] == pytest.approx(varcon_ref(z.double().numpy(), y.numpy(), 0.1, 0.05, 1.5), rel=1e-5, abs=1e-6)
    for loss, grad in zip(losses[1:], grads[1:]):
        assert loss == pytest.approx(losses[0], rel=1e-6, abs=1e-7)
        torch.testing.assert_close(grad, grads[0], rtol=1e-5, atol=1e-6)


def test_no_host_sync_to_find_the_classes(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.unique copies its output size to the host")

    monkeypatch.setattr(torch, "unique", refuse)
    z, y = _batch()
    assert torch.isfinite(varcon_loss(z, y, num_classes=3)) and torch.isfinite(varcon_loss(z, y))
    assert torch.isfinite(VarConLoss(num_classes=3)(z.reshape(8, 2, -1), y[:8]))
