"""One table names every metric: what a run reports is all in it, with a unit and a direction."""

import pandas as pd
import pytest
import torch

from core.config import RunConfig
from core.data.arrays import ArraySplit, digits_arrays
from core.eval.stage import evaluate
from core.losses import head_of
from core.metrics import (
    METRICS,
    corruption_acc_at,
    ece_at,
    fewlabel_acc,
    fewlabel_std,
    fewshot_acc,
    fewshot_ci95,
    known,
    logdet_at,
    mce_vs,
    metric,
    relative_mce_vs,
    with_current_names,
)
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
    result = evaluate(build_model(cfg, 10, head_of(cfg)), cfg, train, test, 10, torch.device("cpu"))
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


def test_the_builders_make_the_names_the_glossary_reads():
    made = {corruption_acc_at(3): "corruption_acc_s<k>", ece_at(5): "ece_s<k>", logdet_at(0): "logdet_s<k>",
            fewlabel_acc(5): "fewlabel_<k>_acc", fewlabel_std(10): "fewlabel_<k>_std",
            fewshot_acc(5, 1): "fewshot_<n>w<k>s_acc", fewshot_ci95(5, 5): "fewshot_<n>w<k>s_ci95",
            mce_vs("cross_entropy"): "mce_vs_<baseline>", relative_mce_vs("supcon"): "relative_mce_vs_<baseline>"}
    for name, entry in made.items():
        assert metric(name).name == entry, name
    assert metric(corruption_acc_at(6)) is None  # five severities


def test_a_study_names_only_known_metrics():
    from core.errors import ConfigError
    from core.study import Study

    with pytest.raises(ConfigError, match=r"study s: summary_metrics: unknown metric\(s\) \['probe_acc'\]"):
        Study("s", "q?", RunConfig(), summary_metrics=["probe_top1", "probe_acc"])


def test_old_tables_read_with_todays_names():
    old = pd.DataFrame({"mce": [39.3], "probe_top1": [97.6]})
    assert list(with_current_names(old).columns) == ["corruption_error", "probe_top1"]
