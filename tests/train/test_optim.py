import math

import pytest
import torch

from core.config import OptimConfig, RunConfig
from core.losses import head_of
from core.models import build_model
from core.train.optim import LARS, build_optimizer, lr_at


def test_warmup_then_cosine():
    lrs = [lr_at(s, 100, 10, 1.0, 0.001) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.001 + 0.5 * 0.999 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, 100, 10, 1.0, 0.001) == pytest.approx(0.001)


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("lars", LARS)])
def test_build_optimizer_uses_effective_lr(name, cls):
    cfg = RunConfig().with_overrides(["model.width=4"])
    model = build_model(cfg, 10, head_of(cfg))
    opt = build_optimizer(model, OptimConfig(optimizer=name, lr=0.2, batch_size=1024, lr_scaling="linear"))
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == pytest.approx(0.8)


def test_lars_trust_ratio_step_closed_form():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    w.grad, b.grad = torch.tensor([[0.0, 2.0]]), torch.tensor([0.5])  # ||g|| = 2
    LARS([w, b], lr=1.0, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001).step()
    # weight: step = lr * eta * ||w|| / ||g|| * g = 0.0025 * g ; bias (1-D): plain SGD step
    assert torch.allclose(w.data, torch.tensor([[3.0, 4.0 - 0.005]]))
    assert torch.allclose(b.data, torch.tensor([0.5]))
