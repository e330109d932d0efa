"""How much KL regularisation helps: beta for VSupCon/VSimCLR, kl_weight for VarCon.

VCL claims its normalised KL term reduces dimensional collapse (higher effective rank of the
embedding) and that the posterior variance tracks corruption severity; VarCon's KL term is its
distinguishing part. This study sweeps the weights and reports accuracy, effective rank and the
posterior log-det at each corruption severity against the weight.

Posterior learning: VSupCon's log-variance layer gets gradients of ~beta/(2D) per dimension from
the KL and ~sigma/||u|| from the contrastive loss through the normalised sample, so at the base
learning rate its variance stays at its initialisation. The study runs beta=1e-3 at
optim.variance_lr_mult 1 (the plain recipe) and at the default (100) with three seeds, and reports
the head's gradient norm, ||mu||, the log-variance and its spread across inputs, and whether the
log-det rises with corruption severity (Spearman, 95% CI over seeds) beside the centroid baseline.

    python studies/kl_weight.py                                 # embedded digits
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from core.metrics import logdet_at
from core.results import PosteriorStats, RunStatus
from core.study import Grid, Study, grid_study_defaults, main_for, question, study_base
from core.study.claims import Claim
from core.study.report import plot_lines, plot_spectrum, to_markdown
from core.study.stats import mean_ci_text

DEFAULT = grid_study_defaults(epochs=8)
VARIANCE_LR_MULT = DEFAULT.optim.variance_lr_mult


def plots(df: pd.DataFrame, out: Path) -> list[Path]:
    vcl = df[df["cfg.loss.name"].isin(["vsupcon", "vsimclr"])]
    var = df[df["cfg.loss.name"] == "varcon"]
    made = [plot_lines(vcl, "cfg.loss.beta", y, "cfg.loss.name", None, out / f"{y}_vs_beta.png", f"{y} vs beta")
            for y in ("probe_top1", "effective_rank_embedding", "logdet_s5")]
    made.append(plot_lines(var, "cfg.loss.kl_weight", "probe_top1", "cfg.loss.name", None,
                           out / "varcon_accuracy_vs_kl_weight.png", "VarCon accuracy vs kl_weight"))
    if {"logdet_s0", "logdet_s5"} <= set(vcl.columns) and not vcl.empty:
        long = pd.DataFrame([{"cfg.loss.beta": r["cfg.loss.beta"], "severity": s, "logdet": r[logdet_at(s)],
                              "cfg.seed": r["cfg.seed"], "status": r["status"]}
                             for _, r in vcl.iterrows() for s in range(6) if logdet_at(s) in r])
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


def _uncertainty_table(df: pd.DataFrame) -> list[str]:
    """VCL's uncertainty against the deterministic baseline any encoder has."""
    vcl = df[(df["status"] == RunStatus.FINISHED) & df["cfg.loss.name"].isin(["vsupcon", "vsimclr"])]
    cols = ["unc_auroc_logdet", "unc_auroc_centroid", "unc_spearman_logdet", "unc_spearman_centroid"]
    if vcl.empty or not set(cols) <= set(vcl.columns):
        return []
    table = vcl.groupby("cfg.loss.beta")[cols].mean().reset_index()
    return ["## Uncertainty: posterior log-det vs distance to the nearest class centroid", "",
            "AUROC for flagging misclassified inputs and Spearman correlation with corruption severity (0-5), "
            "pooled over clean and corrupted test images; 0.5 / 0 = no signal.", "", to_markdown(table), ""]


POSTERIOR_COLUMNS = ["unc_spearman_logdet", "unc_spearman_logdet_vs_centroid", "unc_auroc_logdet", "unc_auroc_centroid",
                     "logdet_s0", "logdet_s5", *PosteriorStats.names(), "probe_top1"]


def posterior_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (beta, variance LR multiplier): mean [95% CI over seeds] of the posterior's diagnostics."""
    ok = df[(df["status"] == RunStatus.FINISHED) & (df["cfg.loss.name"] == "vsupcon")]
    cols = [c for c in POSTERIOR_COLUMNS if c in ok]
    rows = []
    for (beta, mult), g in ok.groupby(["cfg.loss.beta", "cfg.optim.variance_lr_mult"]):
        row = {"beta": beta, "variance_lr_mult": mult, "seeds": len(g)}
        row.update({c: mean_ci_text(g[c].values) for c in cols})
        rows.append(row)
    return pd.DataFrame(rows)


def tables(df: pd.DataFrame) -> list[str]:
    """VCL's uncertainty against the deterministic baseline, and whether the posterior learns."""
    out = _uncertainty_table(df)
    table = posterior_table(df)
    if not table.empty:
        out += ["## Posterior learning (VSupCon)", "",
                "Mean [95% CI over seeds] per setting. `unc_spearman_logdet`: rank correlation of the posterior "
                "log-det with corruption severity (0-5); `unc_auroc_*`: AUROC for flagging misclassified inputs "
                "by the log-det and by the distance to the nearest class centroid (the baseline). Training "
                "diagnostics are means over the last epoch's steps: `logvar_mean` (initialised at -4), "
                "`logdet_spread` (std of the log-det across inputs), `mu_norm` and `logvar_grad_norm` (the "
                "log-variance layer's gradient). `unc_spearman_logdet_vs_centroid`: rank correlation of the "
                "log-det with the centroid distance over clean and corrupted test images (negative: the "
                "posterior is tighter on the inputs that are hard for the encoder).", "", to_markdown(table), ""]
        out += per_corruption_section(df)
    return out


def per_corruption_section(df: pd.DataFrame) -> list[str]:
    """Spearman(log-det, severity) per corruption type, mean [95% CI over seeds], per LR multiplier."""
    ok = df[(df["status"] == RunStatus.FINISHED) & (df["cfg.loss.name"] == "vsupcon") & (df["cfg.loss.beta"] == 1e-3)]
    if ok.empty or "logdet_by_corruption" not in ok:
        return []
    long = pd.DataFrame([{"mult": r["cfg.optim.variance_lr_mult"], **rec} for _, r in ok.iterrows()
                         if isinstance(r["logdet_by_corruption"], (list, np.ndarray)) for rec in r["logdet_by_corruption"]])
    if long.empty:
        return []
    rows = []
    for kind, g in long.groupby("corruption"):
        row = {"corruption": kind}
        for mult, m in g.groupby("mult"):
            row[f"variance_lr_mult={mult:g}"] = mean_ci_text(m["spearman"].values, "+.3f")
        rows.append(row)
    return ["### Log-det vs severity per corruption type (VSupCon, beta=1e-3)", "",
            "Spearman correlation of the posterior log-det with severity (clean = 0) within each corruption type; "
            "mean [95% CI over seeds].", "", to_markdown(pd.DataFrame(rows)), ""]


def make_study(args: argparse.Namespace) -> Study:
    return Study(
        name="kl_weight",
        question=question(__doc__),
        **study_base(args, DEFAULT),
        trials=Grid({"loss.name": ["vsupcon"], "loss.beta": args.betas},
                    {"loss.name": ["vsupcon"], "loss.beta": [1e-3], "optim.variance_lr_mult": [1.0]},
                    {"loss.name": ["varcon"], "loss.kl_weight": args.kl_weights}),
        seeds=args.seeds or [0, 1, 2],
        summary_metrics=["probe_top1", "effective_rank_embedding", "corruption_acc", "logdet_s0", "logdet_s5",
                         "unc_auroc_logdet", "unc_auroc_centroid", "alignment", "uniformity", "cluster_ari"],
        claims=[Claim("VSupCon has a higher embedding effective rank than the deterministic SupCon-like beta=0",
                      "effective_rank_embedding", group="cfg.loss.beta", baseline=0.0, settings=(),
                      where=(("cfg.loss.name", "vsupcon"), ("cfg.optim.variance_lr_mult", VARIANCE_LR_MULT))),
                Claim("training the variance head at its LR multiplier makes the posterior log-det track corruption "
                      "severity better than the plain recipe (1x)", "unc_spearman_logdet",
                      group="cfg.optim.variance_lr_mult", baseline=1.0, settings=(),
                      where=(("cfg.loss.name", "vsupcon"), ("cfg.loss.beta", 1e-3)))],
        plots=plots,
        tables=tables,
    )


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--betas", type=float, nargs="+", default=[0.0, 1e-3, 1e-2, 1e-1])
    p.add_argument("--kl-weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])


if __name__ == "__main__":
    sys.exit(main_for(make_study, __doc__, extra_args=extra_args))
