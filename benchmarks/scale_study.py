"""The study layer's own costs against trial count (issue #36): a Tune + Optuna search of 100, 300 and 1,000
trials through ``studies/search.py``, each trial the platform's real trial path at its smallest size
(``data.train_limit=256``, one epoch, width 4, no robustness), with TPE + ASHA (one objective) and TPE's
multi-objective mode (two objectives, no scheduler); then the report built from a ``trials.parquet`` of
10,000 synthetic rows.

Per search, in a fresh process each (its own Ray instance): the driver's CPU seconds per trial (all its
threads, from the Tuner's start to the report written: Tune's controller, the searcher, the callbacks, the
table), the CPU of Ray's own daemons (GCS and raylet) per trial, the driver's and the whole tree's peak PSS,
Optuna's suggest and tell time per trial (TPE's own growth), Tune's experiment-state saves, and the time to
build and write the table and report. The trials' own processes are not the driver's and are not counted.

    python benchmarks/scale_study.py                                  # the issue's sizes (about an hour here)
    python benchmarks/scale_study.py --trials 20 --samplers tpe --report-rows 1000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

SMALLEST = ["--epochs", "1", "--grace-period", "1", "data.train_limit=256", "model.width=4",
            "eval.robustness=false", "eval.probe_epochs=5"]
OBJECTIVES = {"tpe": ["knn_top1"], "multi": ["knn_top1", "probe_top1"]}


def _search_script():
    """``studies/search.py`` as a module (its ``make_study``, ``extra_args`` and ``main_for``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_study", Path(__file__).parents[1] / "studies" / "search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Timed:
    """Wraps ``owner.name`` in the driver and sums its wall time and calls (benchmark instrumentation only)."""

    def __init__(self, owner, name: str) -> None:
        self.seconds, self.calls, original = 0.0, 0, getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        setattr(owner, name, timed)


KINDS = ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env", "ray::")


def _instance_processes():
    """(kind, process) for every process under this driver (its Ray instance); kind: the first of ``KINDS`` its
    command line holds, else "other"."""
    import psutil

    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        yield next((k for k in KINDS if k in cmd), "other"), p


def _daemon_cpu() -> float:
    """CPU seconds (user + system) of this Ray instance's GCS and raylet so far."""
    import psutil

    total = 0.0
    for kind, p in _instance_processes():
        if kind in ("gcs_server", "raylet"):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


def _pss_by_process() -> dict[str, list]:
    """[processes, PSS MiB] of this Ray instance's processes by kind, and the driver's, now."""
    import psutil

    kinds: dict[str, list] = {"driver": [1, round(psutil.Process().memory_full_info().pss / 2**20)]}
    for kind, p in _instance_processes():
        try:
            pss = p.memory_full_info().pss / 2**20
        except psutil.Error:
            continue
        n, total = kinds.get(kind, [0, 0])
        kinds[kind] = [n + 1, round(total + pss)]
    return kinds


def one_search(sampler: str, trials: int, out: str) -> dict:
    """One search of ``trials`` trials; the driver's costs."""
    import ray
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search.optuna import OptunaSearch

    import core.study.runner as runner
    from core.runtime import start_ray
    study_script = _search_script()
    suggest, tell = Timed(OptunaSearch, "suggest"), Timed(OptunaSearch, "on_trial_complete")
    saves = Timed(TuneController, "save_to_dir")
    table, write, report = (Timed(runner, "results_table"), Timed(runner, "write_table"),
                            Timed(runner, "write_report"))
    start_ray(num_cpus=os.cpu_count() or 2, log_to_driver=False)
    argv = ["--num-samples", str(trials), "--results-dir", out, "--objectives", *OBJECTIVES[sampler], *SMALLEST]
    daemons0, cpu0, t0 = _daemon_cpu(), time.process_time(), time.perf_counter()
    code = study_script.main_for(study_script.make_study, "scale_study", argv, extra_args=study_script.extra_args)
    cpu, wall, daemons = time.process_time() - cpu0, time.perf_counter() - t0, _daemon_cpu() - daemons0
    at_end = _pss_by_process()  # what stays after the search: the per-trial records, by process
    ray.shutdown()
    import pandas as pd

    df = pd.read_parquet(Path(out) / "trials.parquet")
    return {"sampler": sampler, "trials": trials, "exit": code, "rows": len(df),
            "finished": int((df["status"] == "finished").sum()), "stopped early": int((df["status"] == "stopped early")
                                                                                   .sum()),
            "wall s": wall, "driver CPU s": cpu, "driver CPU ms/trial": 1000 * cpu / trials,
            "GCS+raylet CPU ms/trial": 1000 * daemons / trials,
            "suggest ms/trial": 1000 * suggest.seconds / max(1, suggest.calls),
            "tell ms/trial": 1000 * tell.seconds / max(1, tell.calls),
            "state saves": saves.calls, "state save s": saves.seconds,
            "state file KiB": sum(f.stat().st_size for f in (Path(out) / "tune").glob("experiment_state*.json")) / 1024,
            "table s": table.seconds, "write s": write.seconds, "report s": report.seconds,
            "trial s (median)": float(df["trial_seconds"].median()), "PSS at the end by process": at_end}


def synthetic_table(template: Path, rows: int, seed: int = 0):
    """``rows`` trials resampled from a real search's table, their metrics jittered (distinct trials)."""
    import numpy as np
    import pandas as pd

    df = pd.read_parquet(template)
    rng = np.random.default_rng(seed)
    out = df.iloc[rng.integers(0, len(df), rows)].reset_index(drop=True)
    for col in out.select_dtypes("number").columns:
        if not col.startswith("cfg.") or col in ("cfg.loss.temperature", "cfg.augment.strength"):
            out[col] = out[col] * (1 + 0.01 * rng.standard_normal(rows))
    out["config_hash"] = [f"{i:016x}" for i in range(rows)]
    return out


def one_report(sampler: str, template: str, rows: int, out: str) -> dict:
    """The report (tables, verdicts, plots, parquet) of a ``rows``-trial search built from its table."""
    from core.study import add_study_args
    from core.study.report import write_report, write_table

    study_script = _search_script()
    parser = argparse.ArgumentParser()
    add_study_args(parser)
    study_script.extra_args(parser)
    study = study_script.make_study(parser.parse_args(["--objectives", *OBJECTIVES[sampler], *SMALLEST]))
    df = synthetic_table(Path(template), rows)
    t0 = time.perf_counter()
    write_table(df, Path(out) / "trials.parquet")
    t1 = time.perf_counter()
    write_report(study, df, Path(out), 0.0, out)
    t2 = time.perf_counter()
    return {"rows": rows, "table write s": t1 - t0, "report s": t2 - t1,
            "plots": sorted(p.name for p in Path(out).glob("*.png"))}


def _run_child(args: list[str]) -> tuple[dict, float, float]:
    from benchmarks.scale_data import _sampled

    text, driver, tree = _sampled([sys.executable, os.path.abspath(__file__), *args])
    return json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[7:]), driver, tree


def growth(rows: list[dict], key: str) -> str:
    from benchmarks.scale_data import exponents

    return ", ".join("-" if e is None else f"{e:.2f}" for e in exponents(rows, key, size="trials"))


SHOWN = ["wall s", "driver CPU ms/trial", "GCS+raylet CPU ms/trial", "driver PSS MiB", "tree PSS MiB",
         "suggest ms/trial", "tell ms/trial", "state saves", "state save s", "state file KiB", "table s", "write s",
         "report s", "trial s (median)"]


def table(rows: list[dict]) -> str:
    lines = []
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        mine = [r for r in rows if r["sampler"] == sampler]
        lines += [f"{sampler} ({' + '.join(OBJECTIVES[sampler])}{', ASHA' if sampler == 'tpe' else ''}):", "",
                  "| cost | " + " | ".join(f"{r['trials']:,} trials" for r in mine) + " | growth exponent(s) |",
                  "|---|" + "---|" * len(mine) + "---|"]
        for key in SHOWN:
            lines.append(f"| {key} | " + " | ".join(f"{r[key]:,.2f}" for r in mine) + f" | {growth(mine, key)} |")
        lines.append("| finished / stopped early / rows | " + " | ".join(
            f"{r['finished']} / {r['stopped early']} / {r['rows']}" for r in mine) + " | |")
        # the average per trial hides growth behind the fixed start-up cost: the cost of each added trial does not
        added = [1000 * (b["driver CPU s"] - a["driver CPU s"]) / (b["trials"] - a["trials"])
                 for a, b in zip(mine, mine[1:])]
        lines.append("| driver CPU ms per added trial | - | " + " | ".join(f"{m:,.1f}" for m in added) + " | |")
        # Optuna's suggest runs in the driver: its own growth is the sampler's, the rest is the platform's and Tune's
        suggest_s = [r["suggest ms/trial"] * r["trials"] for r in mine]  # ms in all
        own = [a - (s1 - s0) / (b["trials"] - c["trials"])
               for a, c, b, s0, s1 in zip(added, mine, mine[1:], suggest_s, suggest_s[1:])]
        lines.append("| of which not Optuna's suggest | - | " + " | ".join(f"{m:,.1f}" for m in own) + " | |")
        first, last = mine[0], mine[-1]
        ratio = last["driver CPU ms/trial"] / first["driver CPU ms/trial"]
        lines += ["", f"driver CPU per trial at {last['trials']:,} / at {first['trials']:,}: {ratio:.2f}x "
                      f"(goal <= 1.5x): {'met' if ratio <= 1.5 else 'missed'}"]
        if len(added) > 1:
            grown = added[-1] / added[0]
            lines.append(f"driver CPU per added trial, {mine[-2]['trials']:,}->{last['trials']:,} / "
                         f"{first['trials']:,}->{mine[1]['trials']:,}: {grown:.2f}x (goal <= 1.5x): "
                         f"{'met' if grown <= 1.5 else 'missed'}")
            lines.append(f"the same without Optuna's suggest: {own[-1] / own[0]:.2f}x; Optuna's suggest per trial "
                         f"{last['suggest ms/trial'] / first['suggest ms/trial']:.2f}x from {first['trials']:,} to "
                         f"{last['trials']:,} trials (the sampler's own growth)")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, nargs="+", default=[100, 300, 1000])
    p.add_argument("--samplers", nargs="+", choices=list(OBJECTIVES), default=list(OBJECTIVES))
    p.add_argument("--report-rows", type=int, default=10_000, help="rows of the synthetic table reported (0: none)")
    p.add_argument("--one", nargs=2, metavar=("SAMPLER", "TRIALS"), help=argparse.SUPPRESS)
    p.add_argument("--report", nargs=3, metavar=("SAMPLER", "TEMPLATE", "ROWS"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_search(args.one[0], int(args.one[1]), args.out)), flush=True)
        return 0
    if args.report:
        print("RESULT " + json.dumps(one_report(args.report[0], args.report[1], int(args.report[2]), args.out)),
              flush=True)
        return 0
    rows, reports = [], []
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_STUDY_TMP")) as tmp:
        for sampler in args.samplers:
            for n in args.trials:
                out = os.path.join(tmp, f"{sampler}-{n}")
                row, driver, tree = _run_child(["--one", sampler, str(n), "--out", out])
                row.update({"driver PSS MiB": driver, "tree PSS MiB": tree})
                print(f"{sampler} {n} trials: " + ", ".join(
                    f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
                rows.append(row)
            if args.report_rows:
                template = os.path.join(tmp, f"{sampler}-{args.trials[-1]}", "trials.parquet")
                out = os.path.join(tmp, f"{sampler}-report")
                rep, driver, _ = _run_child(["--report", sampler, template, str(args.report_rows), "--out", out])
                rep.update({"sampler": sampler, "process PSS MiB": driver})
                print(f"{sampler} report over {args.report_rows:,} rows: {json.dumps(rep)}", flush=True)
                reports.append(rep)
    print()
    print(table(rows))
    for rep in reports:
        print(f"report of a {rep['sampler']} search over {rep['rows']:,} synthetic rows: {rep['report s']:.1f} s "
              f"(goal < 30 s: {'met' if rep['report s'] < 30 else 'missed'}), table written in "
              f"{rep['table write s']:.2f} s, process peak PSS {rep['process PSS MiB']:,.0f} MiB, plots "
              f"{', '.join(rep['plots']) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raise SystemExit(main())
