"""Verdicts state their power: the smallest difference a paired t-test detects at 80% power."""

import numpy as np
import pandas as pd
import pytest

from core.study.claims import Claim, verdict_line
from core.study.stats import detectable_difference, pairs_needed, t_test_power


def test_detectable_difference_matches_statsmodels():
    from statsmodels.stats.power import TTestPower

    for n, sd in ((3, 1.0), (12, 2.5), (48, 0.3)):
        d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
        assert detectable_difference(sd, n) == pytest.approx(d * sd, rel=1e-6)
        assert t_test_power(d * sd, n, sd) == pytest.approx(0.8, abs=1e-6)


def test_a_hand_computed_case():
    """n=12, sd=2: the normal approximation (z_0.975 + z_0.8) sd / sqrt(n) = 1.62 is a lower bound; the
    t-test needs a little more (t quantiles are wider)."""
    normal = (1.959964 + 0.841621) * 2 / np.sqrt(12)
    mde = detectable_difference(2.0, 12)
    assert normal == pytest.approx(1.6174, abs=1e-3) and normal < mde < normal * 1.1
    assert pairs_needed(mde * 1.0001, 2.0) == 12  # the inverse: n pairs detect it, n - 1 do not
    assert pairs_needed(mde * 0.99, 2.0) == 13 and pairs_needed(mde * 1.2, 2.0) < 12


def test_claim_rows_carry_power_and_seeds_for_the_paper_effect():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for setting in (0.3, 1.0):
            base = 40 + rng.normal(0, 1)
            rows += [{"cfg.loss.name": "cross_entropy", "cfg.seed": seed, "cfg.augment.strength": setting,
                      "cfg.augment.policy": "p", "corruption_error": base, "status": "finished"},
                     {"cfg.loss.name": "supcon", "cfg.seed": seed, "cfg.augment.strength": setting,
                      "cfg.augment.policy": "p", "corruption_error": base - 2 + rng.normal(0, 1), "status": "finished"}]
    claim = Claim("lower corruption error", "corruption_error", paper_effect=-0.02)
    assert claim.better == "lower"  # from the glossary
    (r,) = claim.evaluate(pd.DataFrame(rows))
    assert r["n_pairs"] == 8 and r["detectable_diff"] == pytest.approx(detectable_difference(r["diff_sd"], 8))
    assert r["paper_effect"] == pytest.approx(-0.02 * r["baseline_value"])
    pairs = pairs_needed(r["paper_effect"], r["diff_sd"])
    assert r["seeds_for_paper_effect"] == -(-pairs // 2)  # two settings per seed
    assert "detects |difference| >= " in verdict_line(r) and "seeds" in verdict_line(r)
    with pytest.raises(ValueError, match="contradicts the glossary"):
        Claim("x", "corruption_error", better="higher")
