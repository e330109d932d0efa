"""The README's quoted study results, written from the study's own output, never by hand.

    python -m core.tools.readme_results [RESULTS_DIR] [--readme README.md]

rewrites the block between ``<!-- results: NAME -->`` and ``<!-- /results -->`` in the README from
``RESULTS_DIR/claims.parquet`` (the report's verdicts, Holm-adjusted as one family) and
``RESULTS_DIR/timing.json`` (trials, wall time, date). Run it after the study whose numbers the README
quotes (the main job: ``results/augmentation_robustness``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import DataError, cli_main
from core.io import write_text_atomic
from core.study.studydir import CLAIMS_FILE, TIMING_FILE

BEGIN, END = "<!-- results: {name} -->", "<!-- /results -->"


def _cell(r: pd.Series, p: str = "p_holm") -> str:
    label = "Holm p" if p == "p_holm" else "raw p"
    versus = str(r["baseline"])
    if not _is_number(versus):  # a group or another metric has a value of its own; a constant is its value
        versus = f"{versus} {r['baseline_value']:.2f}"
    return f"{r['group']} {r['group_value']:.2f} vs {versus} ({label}={r[p]:.3g})"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _claimed(r: pd.Series) -> str:
    """What the claim says of the group: ``lower `corruption_error```, ``lower spread of `probe_top1```."""
    return f"{r['better']} {'spread of ' if r['kind'] == 'spread' else ''}`{r['metric']}`"


def results_text(claims: pd.DataFrame, timing: dict, source: str) -> str:
    """The paragraph the README quotes: what holds family-wise, what holds or fails only raw, the rest."""
    tested = claims[np.isfinite(claims["p_holm"])]
    holds = tested[tested["verdict_holm"] == "holds"]
    raw_only = tested[(tested["verdict_holm"] != "holds") & tested["verdict"].str.startswith("holds")]
    fails = tested[tested["verdict"].str.startswith("does not hold")]
    rest = len(tested) - len(holds) - len(raw_only) - len(fails)
    commit = f", commit {timing['commit']}" if timing.get("commit") else ""
    lines = [f"From `{source}` ({timing['written']}{commit}: {timing['finished']} of {timing['trials']} trials "
             f"finished, study wall {timing['wall_seconds']:.0f} s, summed trial time "
             f"{timing['summed_trial_seconds']:.0f} s). With Holm's adjustment over the report's {len(tested)} tests, "
             f"{len(holds)} hold{'s' if len(holds) == 1 else ''}:"]
    lines += [f"- holds: {_claimed(r)}, {_cell(r)}" for _, r in holds.iterrows()]
    if len(raw_only):
        lines.append(f"Raw (each test alone at 95%), {len(raw_only)} more hold, inconclusive family-wise:")
        lines += [f"- holds raw only: {_claimed(r)}, {_cell(r)}, raw p={r['p_value']:.3g}" for _, r in raw_only.iterrows()]
    if len(fails):
        lines.append(f"Raw, {len(fails)} do not hold (the difference goes the other way):")
        lines += [f"- does not hold raw: {_claimed(r)}, {_cell(r, 'p_value')}" for _, r in fails.iterrows()]
    lines.append(f"The other {rest} tests are inconclusive. Each line of the report gives the difference its test "
                 f"could detect; runs repeat exactly, so the same command gives these numbers again.")
    return "\n".join(lines)


SHAPE = re.compile(r"(\d+) of (\d+) trials finished.*?over the report's (\d+) tests", re.S)


def study_shape(text: str) -> tuple[int, int] | None:
    """(trials, tests) of a results text, or None for a block that does not say."""
    found = SHAPE.search(text)
    return (int(found.group(2)), int(found.group(3))) if found else None


def update_readme(readme: Path, name: str, text: str, force: bool = False) -> bool:
    """Replace the README's block for study ``name``; whether it changed. A block quoting a study of another
    shape (trials, tests) is kept unless ``force``: a 1-trial try must not replace the 48-trial verdicts."""
    if not readme.is_file():
        raise DataError(f"{readme} does not exist (--readme names the file whose block is rewritten)")
    old = readme.read_text()
    begin = BEGIN.format(name=name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(END), re.S)
    found = pattern.search(old)
    if not found:
        raise DataError(f"{readme} has no block {begin} ... {END} to fill")
    was, now = study_shape(found.group(0)), study_shape(text)
    if was and now and was != now and not force:
        raise DataError(f"{readme}'s block quotes a study of {was[0]} trials and {was[1]} tests; this one has {now[0]} "
                        f"trials and {now[1]} tests: pass --force to replace it anyway")
    new = pattern.sub(lambda _: f"{begin}\n{text}\n{END}", old)
    if new != old:
        write_text_atomic(readme, new)
    return new != old


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.tools.readme_results", description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", nargs="?", default="results/augmentation_robustness")
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--name", default=None, help="the block's name (default: the results directory's name)")
    parser.add_argument("--force", action="store_true",
                        help="replace a block that quotes a study of another shape (trials, tests)")
    args = parser.parse_args(argv)

    def run() -> int:
        results = Path(args.results_dir)
        for f in (CLAIMS_FILE, TIMING_FILE):
            if not (results / f).is_file():
                raise DataError(f"{results / f} is missing: run the study first (its report writes it)")
        text = results_text(pd.read_parquet(results / CLAIMS_FILE),
                            json.loads((results / TIMING_FILE).read_text()), str(results))
        changed = update_readme(Path(args.readme), args.name or results.name, text, args.force)
        print(text + f"\n{args.readme}: {'updated' if changed else 'already up to date'}")
        return 0

    return cli_main(run)


if __name__ == "__main__":
    sys.exit(main())
