"""The README's quoted results come from a study's own output (one command), never typed by hand."""

import json
from pathlib import Path

import pandas as pd
import pytest

from core.errors import DataError
from core.tools.readme_results import main, results_text, update_readme

REPO = Path(__file__).resolve().parents[2]


def _row(group, metric, verdict, verdict_holm, p, p_holm, kind="mean", better="lower", a=33.3, b=39.3):
    return {"group": group, "baseline": "cross_entropy", "metric": metric, "kind": kind, "better": better,
            "group_value": a, "baseline_value": b, "verdict": verdict, "verdict_holm": verdict_holm,
            "p_value": p, "p_holm": p_holm}


CLAIMS = pd.DataFrame([
    _row("varcon", "corruption_error", "holds", "holds", 1.5e-5, 0.000179),
    _row("supcon", "corruption_error", "holds", "inconclusive", 0.027, 0.216, a=35.01),
    _row("vsupcon", "probe_top1", "does not hold", "inconclusive", 0.04, 0.3, kind="spread", a=0.9, b=0.5),
    _row("supcon", "fewlabel_1_acc", "inconclusive", "inconclusive", 0.5, 1.0, better="higher"),
    _row("x", "fewlabel_1_acc", "not testable (fewer than 2 paired cells)", "not testable", float("nan"), float("nan")),
])
TIMING = {"trials": 48, "finished": 48, "wall_seconds": 205.4, "summed_trial_seconds": 700.2, "machines": 1,
          "written": "2026-12-02"}


def test_the_text_states_each_verdict_with_the_runs_numbers():
    text = results_text(CLAIMS, TIMING, "results/augmentation_robustness")
    assert "(2026-12-02: 48 of 48 trials finished, study wall 205 s, summed trial time 700 s)" in text
    assert "over the report's 4 tests, 1 holds:" in text  # the untestable row is not a test
    assert "- holds: lower `corruption_error`, varcon 33.30 vs cross_entropy 39.30 (Holm p=0.000179)" in text
    assert "- holds raw only: lower `corruption_error`, supcon 35.01 vs cross_entropy 39.30 (Holm p=0.216), raw p=0.027" \
        in text
    assert "- does not hold raw: lower spread of `probe_top1`, vsupcon 0.90 vs cross_entropy 0.50 (raw p=0.04)" in text
    assert "The other 1 tests are inconclusive" in text


def test_a_claim_against_a_constant_names_the_constant_once():
    """VCL's rank correlation is tested against 0: "vsupcon -0.05 vs 0", not "vs 0 0.00"."""
    row = {**_row("vsupcon", "unc_spearman_logdet", "does not hold", "inconclusive", 0.043, 0.6, better="higher",
                  a=-0.05, b=0.0), "baseline": "0"}
    text = results_text(pd.DataFrame([row]), TIMING, "r")
    assert "higher `unc_spearman_logdet`, vsupcon -0.05 vs 0 (raw p=0.043)" in text


def test_the_readme_block_is_replaced_and_only_it(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- results: s -->\nold numbers\n<!-- /results -->\nafter\n")
    assert update_readme(readme, "s", "new numbers") and not update_readme(readme, "s", "new numbers")
    assert readme.read_text() == "before\n<!-- results: s -->\nnew numbers\n<!-- /results -->\nafter\n"
    with pytest.raises(DataError, match="no block <!-- results: other -->"):
        update_readme(readme, "other", "x")


def test_one_command_from_a_results_directory(tmp_path, capsys):
    results = tmp_path / "augmentation_robustness"
    results.mkdir()
    assert main([str(results), "--readme", str(tmp_path / "README.md")]) == 2
    assert "claims.parquet is missing: run the study first" in capsys.readouterr().err
    CLAIMS.to_parquet(results / "claims.parquet")
    (results / "timing.json").write_text(json.dumps(TIMING))
    (tmp_path / "README.md").write_text("<!-- results: augmentation_robustness -->\n<!-- /results -->\n")
    assert main([str(results), "--readme", str(tmp_path / "README.md")]) == 0
    assert "varcon 33.30" in (tmp_path / "README.md").read_text()


def test_the_readme_quotes_the_main_job_through_its_block():
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- results: augmentation_robustness -->", 1)[1].split("<!-- /results -->", 1)[0]
    assert block.strip().startswith("From `results/augmentation_robustness` (20") and "Holm" in block


def test_a_block_is_not_replaced_by_a_study_of_another_shape_unless_asked(tmp_path):
    """A 1-trial try replaced the 48-trial block without a word; the block also names the commit it was made at."""
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results: s -->\n<!-- /results -->\n")
    full = results_text(CLAIMS, {**TIMING, "commit": "ab9ef69"}, "results/s")
    assert ", commit ab9ef69: 48 of 48 trials finished" in full
    assert update_readme(readme, "s", full)
    tiny = results_text(CLAIMS.iloc[:1], {**TIMING, "trials": 1, "finished": 1}, "results/s")
    with pytest.raises(DataError, match="quotes a study of 48 trials and 4 tests; this one has 1 trials and 1 tests: "
                                        "pass --force"):
        update_readme(readme, "s", tiny)
    assert "48 of 48" in readme.read_text()
    assert update_readme(readme, "s", tiny, force=True) and "1 of 1" in readme.read_text()
    with pytest.raises(DataError, match="does not exist"):
        update_readme(tmp_path / "nope.md", "s", tiny)
