import pytest
import torch
import torch.nn.functional as F
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from core.losses import (
    VCLLoss,
    normalized_gaussian_kl,
    posterior_log_det,
    simclr_loss,
    supcon_loss,
    vcl_loss,
)
from core.models.heads import projected_normal_sample
from tests.losses.numpy_reference import gaussian_kl_over_d_ref


def test_kl_equals_analytic_gaussian_kl_over_d():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 32, generator=g, dtype=torch.float64), torch.randn(5, 32, generator=g, dtype=torch.float64)
    got = normalized_gaussian_kl(mu, logvar).double()
    torch_kl = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1) / 32
    assert torch.allclose(got, torch_kl, rtol=1e-5)
    full = kl_divergence(MultivariateNormal(mu, torch.diag_embed(logvar.exp())),
                         MultivariateNormal(torch.zeros(32, dtype=torch.float64), torch.eye(32, dtype=torch.float64))) / 32
    assert torch.allclose(got, full, rtol=1e-5)
    assert torch.allclose(got, torch.from_numpy(gaussian_kl_over_d_ref(mu.numpy(), logvar.numpy())), rtol=1e-5)


def test_kl_is_zero_at_standard_normal():
    assert normalized_gaussian_kl(torch.zeros(3, 8), torch.zeros(3, 8)).abs().max().item() < 1e-7


def test_sample_is_on_sphere_and_reparameterised():
    mu = torch.randn(4, 2, 16, requires_grad=True)
    logvar = torch.full((4, 2, 16), -1.0, requires_grad=True)
    z = projected_normal_sample(mu, logvar, torch.Generator().manual_seed(0))
    assert torch.allclose(z.norm(dim=-1), torch.ones(4, 2), atol=1e-6)
    z.sum().backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0


def test_zero_variance_sample_is_normalised_mean():
    mu = torch.randn(3, 8)
    z = projected_normal_sample(mu, torch.full_like(mu, -60.0))
    assert torch.allclose(z, F.normalize(mu, dim=-1), atol=1e-6)


@pytest.mark.parametrize("supervised", [True, False])
def test_vcl_is_contrastive_plus_beta_kl(supervised):
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(6, 2, 16, generator=g), torch.randn(6, 2, 16, generator=g) - 2
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    z = projected_normal_sample(mu, logvar, g)
    con = supcon_loss(z, labels, 0.2) if supervised else simclr_loss(z, 0.2)
    kl = normalized_gaussian_kl(mu, logvar).mean()
    got = VCLLoss(beta=0.3, temperature=0.2, supervised=supervised)(z, labels, mu, logvar)
    assert got.item() == pytest.approx((con + 0.3 * kl).item(), rel=1e-6)
    assert vcl_loss(z, labels, mu, logvar, beta=0.0, temperature=0.2, supervised=supervised).item() == pytest.approx(con.item())


def test_log_det_is_sum_of_logvar():
    logvar = torch.tensor([[0.0, -1.0, 2.0]])
    assert posterior_log_det(logvar).item() == pytest.approx(1.0)


def test_bad_inputs():
    mu = torch.zeros(2, 2, 4)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        vcl_loss(F.normalize(torch.randn(2, 2, 4), dim=-1), torch.tensor([0, 1]), mu, mu, beta=-1)
    with pytest.raises(ValueError, match="VSupCon needs labels"):
        vcl_loss(F.normalize(torch.randn(2, 2, 4), dim=-1), None, mu, mu)


def test_vcl_gradcheck_float64():
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(4, 2, 5, generator=g, dtype=torch.float64, requires_grad=True)
    logvar = (torch.randn(4, 2, 5, generator=g, dtype=torch.float64) - 1).requires_grad_(True)
    noise = torch.randn(4, 2, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1])

    def loss(m, lv):  # fixed noise: the reparameterised sample is a deterministic function
        z = F.normalize(m + (0.5 * lv).exp() * noise, dim=-1)
        return vcl_loss(z, labels, m, lv, beta=0.3, temperature=0.5)
    assert torch.autograd.gradcheck(loss, (mu, logvar))
