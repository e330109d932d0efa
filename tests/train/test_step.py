"""One epoch of training steps without Ray: divergence, typed stats, the variance head's LR."""

import numpy as np
import pytest
import torch

from core.config import RunConfig
from core.data.bad_images import BadImages
from core.losses import build_loss, head_of
from core.losses.registry import loss_family
from core.models import build_model
from core.results import PosteriorStats, RunStatus
from core.train.step import FINITE_CHECK_EVERY, Diverged, FiniteGuard, Stepper, train_epoch
from tests.block_views import BlockViews

CFG = RunConfig().with_overrides(["optim.epochs=5", "model.width=4"])


def test_finite_guard_reports_the_first_bad_step():
    guard = FiniteGuard(torch.device("cpu"))
    for step, value in enumerate([1.0, 2.0, float("nan"), float("inf"), 3.0]):
        guard.update(torch.tensor(value), step)
    with pytest.raises(Diverged, match="diverged at epoch 4, step 2") as exc:
        guard.check(epoch=4)
    assert (exc.value.epoch, exc.value.step) == (4, 2)


def _stepper(lr: float) -> Stepper:
    model = build_model(CFG, 10, head_of(CFG))
    return Stepper(net=model, model=model, loss_fn=build_loss(CFG.loss), family=loss_family("supcon"),
                   optimizer=torch.optim.SGD(model.parameters(), lr=lr), device=torch.device("cpu"),
                   make_views=lambda batch, epoch: torch.randn(len(batch["label"]), 2, 3, 16, 16), lr_at=lambda s: lr)


def _batches(n: int):
    rng = np.random.default_rng(0)
    return [{"label": rng.integers(0, 4, 32), "index": np.arange(32) + 32 * i} for i in range(n)]


def test_train_epoch_returns_typed_stats():
    torch.manual_seed(0)
    stats, step, index = train_epoch(_stepper(0.01), _batches(3), epoch=0, step=5, bad=BadImages(0.1))
    assert step == 8 and stats.steps == 3 and stats.samples == 96 and len(index) == 96
    assert np.isfinite(stats.loss) and stats.loss > 0 and stats.grad_norm > 0
    assert 3.5 < stats.classes_per_batch <= 4 and stats.views_per_s > 0 and stats.row()["epoch"] == 0


def test_an_epoch_keeps_no_view_of_a_finished_batch():
    """The epoch's sample ids kept as views pinned every block of the epoch's views in Ray's object store."""
    rng = np.random.default_rng(0)
    blocks = BlockViews({"label": rng.integers(0, 4, 128), "index": np.arange(128)}, rows_per_block=32)
    _, _, index = train_epoch(_stepper(0.01), blocks, epoch=0, step=0, bad=BadImages(0.1))
    assert blocks.most_held == 0 and np.array_equal(index, np.arange(128))


def test_train_epoch_stops_on_a_non_finite_loss():
    with pytest.raises(Diverged, match="epoch 2, step 1$"):  # step 0 is finite; its update blows up
        train_epoch(_stepper(1e30), _batches(FINITE_CHECK_EVERY + 2), epoch=2, step=0, bad=BadImages(0.1))


def test_non_finite_evaluation_metrics_fail_the_run():
    from core.train.loop import fail_if_not_finite

    row = fail_if_not_finite({"status": RunStatus.FINISHED, "probe_top1": 98.0, "probe_ece": float("nan")})
    assert row["status"] == RunStatus.FAILED and "probe_ece" in row["error"]
    assert fail_if_not_finite({"status": RunStatus.FINISHED, "probe_top1": 98.0})["status"] == RunStatus.FINISHED


def test_variance_head_learns_at_its_lr_multiplier_and_is_tracked():
    """VSupCon's log-variance layer gets a non-zero gradient; its step is variance_lr_mult x the base
    LR step (SGD, no momentum: closed form); the epoch row carries the posterior diagnostics."""
    from core.train.optim import build_optimizer

    torch.manual_seed(0)
    cfg = CFG.with_overrides(["loss.name=vsupcon", "optim.momentum=0", "optim.weight_decay=0",
                              "optim.variance_lr_mult=100"])
    model = build_model(cfg, 10, head_of(cfg))
    opt = build_optimizer(model, cfg.optim)
    stepper = Stepper(net=model, model=model, loss_fn=build_loss(cfg.loss), family=loss_family("vsupcon"),
                      optimizer=opt, device=torch.device("cpu"),
                      make_views=lambda batch, epoch: torch.randn(len(batch["label"]), 2, 3, 16, 16),
                      lr_at=lambda s: 0.01)
    before = model.head.logvar.bias.detach().clone()
    views, labels = torch.randn(32, 2, 3, 16, 16), torch.from_numpy(_batches(1)[0]["label"])
    stepper.step(views, labels, 0)
    grad = model.head.logvar.bias.grad
    assert grad.abs().max() > 0
    torch.testing.assert_close(model.head.logvar.bias.detach(), before - 0.01 * 100 * grad)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 1.0])
    stats = stepper.posterior_stats()
    assert PosteriorStats.names() == ("logvar_mean", "logdet_spread", "mu_norm", "logvar_grad_norm")
    assert stats.logvar_grad_norm > 0 and stats.logvar_mean == pytest.approx(-4.0, abs=1e-3)
    stats, _, _ = train_epoch(stepper, _batches(2), epoch=0, step=1, bad=BadImages(0.1))
    assert stats.posterior.logvar_grad_norm > 0 and stats.posterior.mu_norm > 0 and "logdet_spread" in stats.row()
    plain, _, _ = train_epoch(_stepper(0.01), _batches(1), epoch=0, step=0, bad=BadImages(0.1))
    assert "logvar_mean" not in plain.row()  # no posterior, no columns
