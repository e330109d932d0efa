"""Loss families are registered objects: a new family is one file in core/losses/, nothing else."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from core.config import READ_BY_FAMILY, ConfigError, LossConfig, RunConfig
from core.losses import build_loss, head_of
from core.losses.registry import LossFamily, loss_family, register
from core.models import build_model
from core.registry import LOSSES
from core.study import OptunaSpace

CORE = Path(__file__).resolve().parents[2] / "core"


class _Alignment(nn.Module):
    def forward(self, z, labels):
        return (z[:, 0] - z[:, 1]).pow(2).sum(-1).mean()


@pytest.fixture
def toy_family():
    def validate(cfg):
        if cfg.loss.temperature > 1:
            raise ConfigError(f"loss.temperature must be <= 1 for toy_align, got {cfg.loss.temperature}")

    family = register(LossFamily(
        name="toy_align", head="projection", fields=("temperature",), build=lambda c, k: _Alignment(),
        objective=lambda fn, out, y, b, v: fn(out.z.reshape(b, v, -1), y), min_views=2, validate=validate,
        search_space=lambda trial: trial.suggest_float("loss.temperature", 0.1, 1.0)))
    yield family
    LOSSES.unregister("toy_align")


def test_a_new_family_is_usable_everywhere_once_registered(toy_family):
    cfg = RunConfig().with_overrides(["loss.name=toy_align"])
    model = build_model(cfg, 10, head_of(cfg))
    assert model.head_kind == "projection" and isinstance(build_loss(cfg.loss), _Alignment)
    out = model(torch.randn(8, 3, 16, 16))
    loss = loss_family("toy_align").objective(build_loss(cfg.loss), out, torch.zeros(4, dtype=torch.long), 4, 2)
    assert loss.ndim == 0 and loss.item() >= 0
    with pytest.raises(ConfigError, match="toy_align"):
        RunConfig().with_overrides(["loss.name=toy_align", "loss.temperature=2"])
    with pytest.raises(ConfigError, match=r"augment\.views must be >= 2"):
        RunConfig().with_overrides(["loss.name=toy_align", "augment.views=1"])

    class Trial:
        def __init__(self):
            self.asked = []

        def suggest_float(self, name, *a, **k):
            self.asked.append(name)

        def suggest_categorical(self, name, *a, **k):
            self.asked.append(name)

    trial = Trial()
    OptunaSpace("toy_align", seed=0)(trial)
    assert trial.asked[0] == "loss.temperature" and "optim.batch_size" in trial.asked


def test_registered_families_and_their_fields():
    assert set(LOSSES) == {"supcon", "simclr", "varcon", "vsupcon", "vsimclr", "cross_entropy"}
    known = set(LossConfig.__dataclass_fields__)
    for _, fam in LOSSES.items():
        assert set(fam.fields) <= known, fam.name
    assert {n for n, f in LOSSES.items() if f.variational} == {"vsupcon", "vsimclr"}
    assert loss_family("cross_entropy").head == "linear"


def test_a_family_reads_no_knob_beyond_its_fields():
    """``fields`` names the run (core.runs.identity hashes only those knobs): a family that built its loss or
    checked its config from a knob it does not list would give runs of other weights one name."""
    knobs = {f.name for f in dataclasses.fields(LossConfig) if f.metadata.get(READ_BY_FAMILY)}
    assert knobs == set(LossConfig.__dataclass_fields__) - {"name"}

    class Guarded:
        def __init__(self, loss, allowed):
            self._loss, self._allowed = loss, allowed

        def __getattr__(self, name):
            assert name not in knobs or name in self._allowed, f"reads loss.{name}, not in its fields"
            return getattr(self._loss, name)

    for name, fam in LOSSES.items():
        cfg = RunConfig().with_overrides([f"loss.name={name}"])
        guarded = Guarded(cfg.loss, fam.fields)
        fam.build(guarded, 10)
        if fam.validate:
            fam.validate(type("Cfg", (), {"loss": guarded, "__getattr__": lambda self, k: getattr(cfg, k)})())
    with pytest.raises(ConfigError, match=r"loss\.name must be one of \['supcon', .*\], got 'triplet'"):
        loss_family("triplet")


def test_no_module_outside_core_losses_names_a_family():
    """Only two defaults name one: the config's default loss and the report's default baseline."""
    names = "|".join(LOSSES)
    hits = []
    for path in CORE.rglob("*.py"):
        if "losses" in path.relative_to(CORE).parts:
            continue
        for line in path.read_text().splitlines():
            if re.search(rf"[\"']({names})[\"']", line):
                hits.append(f"{path.relative_to(CORE)}: {line.strip()}")
    assert len(hits) == 2 and hits[0].startswith(("config.py", "report.py")), hits
