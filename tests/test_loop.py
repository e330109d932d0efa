"""The loop's pieces without Ray: resume choice, bad-image accounting, divergence, one epoch."""

import numpy as np
import pytest
import torch

from core.config import RunConfig
from core.loop import (FINITE_CHECK_EVERY, BadImageCounter, Diverged, FiniteGuard, Stepper, choose_state,
                       diverged_record, resume_point, train_epoch)
from core.losses import build_loss
from core.losses.registry import loss_family
from core.models import build_model
from core.results import RunStatus

CFG = RunConfig().with_overrides(["optim.epochs=5", "model.width=4"])


def _state(epoch, **kw):
    return {"epoch": epoch, "step": 10 * (epoch + 1), "history": [{"epoch": e} for e in range(epoch + 1)],
            "config_hash": CFG.config_hash(), "final": {}, **kw}


def test_choose_state_takes_the_most_advanced_and_a_divergence_is_final():
    assert choose_state([None, _state(1), _state(3), _state(2)])["epoch"] == 3
    diverged = {"status": "diverged", "final": {"status": "diverged"}, "config_hash": CFG.config_hash()}
    assert choose_state([_state(4), diverged]) is diverged
    assert choose_state([None, None]) is None


def test_resume_point():
    assert resume_point(None, CFG).start_epoch == 0
    r = resume_point(_state(2), CFG)
    assert (r.start_epoch, r.step, len(r.history), r.final) == (3, 30, 3, None) and r.state is not None
    done = resume_point(_state(4, final={"status": "finished", "probe_top1": 99.0}), CFG)
    assert done.final == {"status": "finished", "probe_top1": 99.0}  # nothing left: return the result
    assert resume_point({"status": "diverged", "final": {"x": 1}, "config_hash": CFG.config_hash()}, CFG).final == {"x": 1}
    with pytest.raises(RuntimeError, match="belongs to config"):
        resume_point({**_state(1), "config_hash": "other"}, CFG)


def test_bad_images_are_skipped_counted_and_named_then_fail_the_epoch():
    counter = BadImageCounter(max_fraction=0.2)
    batch = {"label": np.arange(10), "index": np.arange(10), "ok": np.array([True] * 9 + [False]),
             "path": np.array([f"img{i}.jpg" for i in range(10)])}
    with pytest.warns(UserWarning, match="img9.jpg"):
        kept = counter.filter(batch)
    assert len(kept["label"]) == 9 and counter.bad == ["img9.jpg"] and counter.seen == 10
    bad = {**batch, "ok": np.array([False] * 5 + [True] * 5)}
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match=r"6 of 20 images undecodable"):
        counter.filter(bad)


def test_finite_guard_reports_the_first_bad_step():
    guard = FiniteGuard(torch.device("cpu"))
    for step, value in enumerate([1.0, 2.0, float("nan"), float("inf"), 3.0]):
        guard.update(torch.tensor(value), step)
    with pytest.raises(Diverged, match="diverged at epoch 4, step 2") as exc:
        guard.check(epoch=4)
    row = diverged_record(CFG, exc.value)
    assert row["status"] == RunStatus.DIVERGED and row["diverged_at"] == "diverged at epoch 4, step 2"


def _stepper(lr: float) -> Stepper:
    model = build_model(CFG, num_classes=10)
    return Stepper(net=model, model=model, loss_fn=build_loss(CFG.loss), family=loss_family("supcon"),
                   optimizer=torch.optim.SGD(model.parameters(), lr=lr), device=torch.device("cpu"),
                   make_views=lambda batch, epoch: torch.randn(len(batch["label"]), 2, 3, 16, 16), lr_at=lambda s: lr)


def _batches(n: int):
    rng = np.random.default_rng(0)
    return [{"label": rng.integers(0, 4, 32), "index": np.arange(32) + 32 * i} for i in range(n)]


def test_train_epoch_returns_typed_stats():
    torch.manual_seed(0)
    stats, step, index = train_epoch(_stepper(0.01), _batches(3), epoch=0, step=5, bad=BadImageCounter(0.1))
    assert step == 8 and stats.steps == 3 and stats.samples == 96 and len(index) == 96
    assert np.isfinite(stats.loss) and stats.loss > 0 and stats.grad_norm > 0
    assert 3.5 < stats.classes_per_batch <= 4 and stats.views_per_s > 0 and stats.row()["epoch"] == 0


def test_train_epoch_stops_on_a_non_finite_loss():
    with pytest.raises(Diverged, match="epoch 2, step 1$"):  # step 0 is finite; its update blows up
        train_epoch(_stepper(1e30), _batches(FINITE_CHECK_EVERY + 2), epoch=2, step=0, bad=BadImageCounter(0.1))


def test_non_finite_evaluation_metrics_fail_the_run():
    from core.train import _fail_if_not_finite

    row = _fail_if_not_finite({"status": RunStatus.FINISHED, "probe_top1": 98.0, "probe_ece": float("nan")})
    assert row["status"] == RunStatus.FAILED and "probe_ece" in row["error"]
    assert _fail_if_not_finite({"status": RunStatus.FINISHED, "probe_top1": 98.0})["status"] == RunStatus.FINISHED


def test_variance_head_learns_at_its_lr_multiplier_and_is_tracked():
    """VSupCon's log-variance layer gets a non-zero gradient; its step is variance_lr_mult x the base
    LR step (SGD, no momentum: closed form); the epoch row carries the posterior diagnostics."""
    from core.optim import build_optimizer

    torch.manual_seed(0)
    cfg = CFG.with_overrides(["loss.name=vsupcon", "optim.momentum=0", "optim.weight_decay=0",
                              "optim.variance_lr_mult=100"])
    model = build_model(cfg, num_classes=10)
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
    assert set(stats) == {"logvar_mean", "logdet_spread", "mu_norm", "logvar_grad_norm"}
    assert stats["logvar_grad_norm"] > 0 and stats["logvar_mean"] == pytest.approx(-4.0, abs=1e-3)
    stats, _, _ = train_epoch(stepper, _batches(2), epoch=0, step=1, bad=BadImageCounter(0.1))
    assert stats.logvar_grad_norm > 0 and stats.mu_norm > 0 and "logdet_spread" in stats.row()
    plain, _, _ = train_epoch(_stepper(0.01), _batches(1), epoch=0, step=0, bad=BadImageCounter(0.1))
    assert "logvar_mean" not in plain.row()  # no posterior, no columns
