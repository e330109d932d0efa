"""One table names every metric: what a run reports is all in it, with a unit and a direction."""

import pandas as pd
import pytest
import torch

from core.config import RunConfig
from core.data.arrays import ArraySplit, digits_arrays
from core.eval.glossary import METRICS, known, metric, with_current_names
from core.eval.stage import evaluate
from core.models import build_model

PROTOCOL = {"knn_protocol", "probe_protocol", "corruption_protocol"}  # descriptions, not metrics


@pytest.mark.parametrize("loss", ["supcon", "vsupcon"])
def test_every_reported_metric_is_in_the_glossary(loss):
    cfg = RunConfig().with_overrides([f"loss.name={loss}", "model.width=4", "eval.robustness=true",
                                      "eval.corruption_suite=fast", "eval.corruptions=[contrast,gaussian_noise]",
                                      "eval.probe_epochs=2", "eval.few_shot_episodes=10"])
    arrays = digits_arrays(16)
    train, test = (ArraySplit(*(a[:300] for a in arrays[s])) for s in ("train", "test"))
    torch.manual_seed(0)
    result = evaluate(build_model(cfg, 10), cfg, train, test, 10, torch.device("cpu"))
    unknown = sorted(k for k in result.scalars if k not in PROTOCOL and not known(k))
    assert not unknown, unknown
    assert "corruption_error" in result.scalars and "mce" not in result.scalars


def test_entries_have_units_and_directions():
    for m in METRICS:
        assert m.unit and m.better in ("higher", "lower", "") and m.meaning and m.source, m
    assert metric("probe_ece").unit == "%" and metric("corruption_error").better == "lower"
    assert metric("corruption_acc_s3").better == "higher" and metric("mce_vs_cross_entropy").better == "lower"
    assert metric("mce") is metric("corruption_error")  # an older name still reads
    with pytest.raises(ValueError, match="no better side"):
        _ = metric("loss").mode


def test_old_tables_read_with_todays_names():
    old = pd.DataFrame({"mce": [39.3], "probe_top1": [97.6]})
    assert list(with_current_names(old).columns) == ["corruption_error", "probe_top1"]
