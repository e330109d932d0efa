"""Ablation specs are validated completely before any Ray work: a spec that would change nothing,
fail every trial or write outside results/ is refused naming the field."""

import argparse

import pytest

from core.errors import ConfigError
from core.study.ablate import load_spec

ARGS = argparse.Namespace(epochs=None, overrides=[], seeds=None, config=[])


def _spec(tmp_path, text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return load_spec(path, ARGS)


@pytest.mark.parametrize("body, message", [
    ("variants:\n  ref: {}\n  other: {seed: 5}\n", r"variant 'other' sets \['seed'\]: seeds come from 'seeds:'"),
    ("variants:\n  ref: {}\n  other: {storage_path: /tmp/x}\n", r"sets \['storage_path'\]"),
    ("metrics: [probe_top1, not_a_metric]\nvariants:\n  ref: {}\n  other: {loss.temperature: 0.2}\n",
     r"unknown metric\(s\) \['not_a_metric'\]"),
    ("name: ../../escape\nvariants:\n  ref: {}\n  other: {loss.temperature: 0.2}\n", r"must be a plain directory name"),
    ("variants:\n  - ref\n  - other\n", r"'variants' must map names to overrides .*got a list"),
    ("variants:\n  ref: {}\n  other: [1, 2]\n", r"variant 'other' must map dotted keys to values"),
    ("variants:\n  ref: {}\n", r"needs a reference and at least one variation"),
])
def test_bad_specs_are_refused(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        _spec(tmp_path, body)


def test_a_good_spec_gives_one_trial_per_variant_and_seed(tmp_path):
    study = _spec(tmp_path, "name: tiny\nseeds: [0, 1]\nmetrics: [probe_top1, corruption_error]\n"
                            "variants:\n  ref: {}\n  warm: {loss.temperature: 0.2}\n")
    assert len(study.points()) == 4 and {p["variant"] for p in study.points()} == {"ref", "warm"}
    assert [c.metric for c in study.claims] == ["probe_top1", "corruption_error"]
