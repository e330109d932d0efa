"""How much KL regularisation helps: beta for VSupCon/VSimCLR, kl_weight for VarCon.

VCL claims its normalised KL term reduces dimensional collapse (higher effective rank of the
embedding) and that the posterior variance tracks corruption severity; VarCon's KL term is its
distinguishing part. This study sweeps the weights and reports accuracy, effective rank and the
posterior log-det at each corruption severity against the weight.

    python studies/kl_weight.py                                 # embedded digits
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from core.report import Claim, plot_lines, plot_spectrum, to_markdown
from core.results import RunStatus
from core.study import Study, base_config, grid_study_defaults, main_for, question

DEFAULT = grid_study_defaults(epochs=8)


def plots(df: pd.DataFrame, out: Path) -> list[Path]:
    vcl = df[df["cfg.loss.name"].isin(["vsupcon", "vsimclr"])]
    var = df[df["cfg.loss.name"] == "varcon"]
    made = [plot_lines(vcl, "cfg.loss.beta", y, "cfg.loss.name", None, out / f"{y}_vs_beta.png", f"{y} vs beta")
            for y in ("probe_top1", "effective_rank_embedding", "logdet_s5")]
    made.append(plot_lines(var, "cfg.loss.kl_weight", "probe_top1", "cfg.loss.name", None,
                           out / "varcon_accuracy_vs_kl_weight.png", "VarCon accuracy vs kl_weight"))
    if {"logdet_s0", "logdet_s5"} <= set(vcl.columns) and not vcl.empty:
        long = pd.DataFrame([{"cfg.loss.beta": r["cfg.loss.beta"], "severity": s, "logdet": r[f"logdet_s{s}"],
                              "cfg.seed": r["cfg.seed"], "status": r["status"]}
                             for _, r in vcl.iterrows() for s in range(6) if f"logdet_s{s}" in r])
        made.append(plot_lines(long, "severity", "logdet", "cfg.loss.beta", None, out / "uncertainty_vs_severity.png",
                               "posterior log-det vs corruption severity, per beta"))
    if {"unc_auroc_logdet", "unc_auroc_centroid"} <= set(vcl.columns) and not vcl.empty:
        both = pd.concat([vcl.assign(score="posterior log-det", auroc=vcl["unc_auroc_logdet"]),
                          vcl.assign(score="centroid distance (deterministic)", auroc=vcl["unc_auroc_centroid"])])
        made.append(plot_lines(both, "cfg.loss.beta", "auroc", "score", None, out / "error_detection_auroc_vs_beta.png",
                               "AUROC for flagging misclassified inputs (clean + corrupted)"))
    weight = df["cfg.loss.beta"].map("beta={}".format).where(df["cfg.loss.name"] != "varcon",
                                                              df["cfg.loss.kl_weight"].map("kl_weight={}".format))
    made.append(plot_spectrum(df.assign(setting=df["cfg.loss.name"] + " " + weight), "setting",
                              out / "feature_spectrum.png", "feature spectrum (dimensional collapse)"))
    return made


def tables(df: pd.DataFrame) -> list[str]:
    """VCL's uncertainty against the deterministic baseline any encoder has."""
    vcl = df[(df["status"] == RunStatus.FINISHED) & df["cfg.loss.name"].isin(["vsupcon", "vsimclr"])]
    cols = ["unc_auroc_logdet", "unc_auroc_centroid", "unc_spearman_logdet", "unc_spearman_centroid"]
    if vcl.empty or not set(cols) <= set(vcl.columns):
        return []
    table = vcl.groupby("cfg.loss.beta")[cols].mean().reset_index()
    return ["## Uncertainty: posterior log-det vs distance to the nearest class centroid", "",
            "AUROC for flagging misclassified inputs and Spearman correlation with corruption severity (0-5), "
            "pooled over clean and corrupted test images; 0.5 / 0 = no signal.", "", to_markdown(table), ""]


def make_study(args: argparse.Namespace) -> Study:
    return Study(
        name="kl_weight",
        question=question(__doc__),
        base=base_config(args, DEFAULT),
        grid=[{"loss.name": ["vsupcon"], "loss.beta": args.betas},
              {"loss.name": ["varcon"], "loss.kl_weight": args.kl_weights}],
        seeds=args.seeds or [0, 1],
        summary_metrics=["probe_top1", "effective_rank_embedding", "corruption_acc", "logdet_s0", "logdet_s5",
                         "unc_auroc_logdet", "unc_auroc_centroid", "alignment", "uniformity", "cluster_ari"],
        claims=[Claim("VSupCon has a higher embedding effective rank than the deterministic SupCon-like beta=0",
                      "effective_rank_embedding", group="cfg.loss.beta", baseline=0.0, settings=(),
                      where=(("cfg.loss.name", "vsupcon"),))],
        plots=plots,
        tables=tables,
    )


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--betas", type=float, nargs="+", default=[0.0, 1e-3, 1e-2, 1e-1])
    p.add_argument("--kl-weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])


if __name__ == "__main__":
    sys.exit(main_for(make_study, __doc__, extra_args=extra_args))
