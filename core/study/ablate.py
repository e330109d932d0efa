"""Run a declarative ablation: a base config plus named one-factor variations, each compared
with the first (reference) variant, through the same study machinery.

    python -m core.study.ablate ablations/varcon_components.yaml [--seeds 0 1] [--epochs 5] [study flags]

Spec (YAML): ``name``, ``question``, ``base`` (a RunConfig mapping), ``seeds``, ``metrics``
(summary columns; each becomes a "higher is better" claim unless listed under ``lower_is_better``)
and ``variants`` (name -> {dotted.key: value}); the first variant is the reference.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from core.config import CONFIG_HELP, Layer
from core.config_loader import load_yaml
from core.errors import ConfigError
from core.metrics import require
from core.study.claims import Claim
from core.study.cli import main_for, study_config
from core.study.spec import Study, Variants

USAGE = "usage: python -m core.study.ablate SPEC.yaml [study flags]"


RESERVED = ("seed", "storage_path", "name", "num_workers", "use_gpu")  # set by seeds: and the study's flags


def _variants(raw: object, where: str) -> dict[str, dict]:
    """``variants:`` as name -> {dotted.key: value}; anything else, or a variant setting what the study's
    seeds and flags own, is refused."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'variants' must map names to overrides ({{name: {{dotted.key: value}}}}), "
                          f"got a {type(raw).__name__}")
    if len(raw) < 2:
        raise ConfigError(f"{where}: 'variants' needs a reference and at least one variation")
    out = {}
    for name, overrides in raw.items():
        overrides = overrides or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"{where}: variant {name!r} must map dotted keys to values, got {overrides!r}")
        reserved = sorted(set(overrides) & set(RESERVED))
        if reserved:
            raise ConfigError(f"{where}: variant {name!r} sets {reserved}: seeds come from 'seeds:' (every variant "
                              f"runs each), placement from the study's flags")
        out[str(name)] = dict(overrides)
    return out


def load_spec(path: str | Path, args: argparse.Namespace) -> Study:
    """An ablation spec as a study, validated completely before any Ray work."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ablation spec {str(path)!r} does not exist")
    spec = load_yaml(path)
    if not isinstance(spec, dict):
        raise ConfigError(f"ablation spec {str(path)!r} must hold a mapping")
    unknown = set(spec) - {"name", "question", "base", "seeds", "metrics", "lower_is_better", "variants"}
    if unknown:
        raise ConfigError(f"{path}: unknown spec field(s) {sorted(unknown)}")
    name = str(spec.get("name", path.stem))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or ".." in name:
        raise ConfigError(f"{path}: name {name!r} must be a plain directory name (letters, digits, _ . -)")
    variants = _variants(spec.get("variants"), str(path))
    try:  # the spec's base is the study's default layer, above the data source's defaults
        resolved = study_config(args, Layer(f"ablation spec {str(path)!r}", spec.get("base") or {}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    metrics = list(spec.get("metrics") or ["probe_top1", "knn_top1"])
    lower = list(spec.get("lower_is_better") or [])
    require([*metrics, *lower], f"{path}: metrics")
    reference = next(iter(variants))
    try:  # directions come from the glossary; lower_is_better may only restate it
        claims = [Claim(f"{m}: variant vs reference {reference!r}", m, better="lower" if m in lower else None,
                        group="variant", baseline=reference, settings=()) for m in metrics]
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return Study(name=name, question=spec.get("question", ""), base=resolved.config, origins=dict(resolved.origins),
                 trials=Variants(variants),
                 seeds=args.seeds or spec.get("seeds", [0, 1, 2]), claims=claims, summary_metrics=metrics,
                 group="variant")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n\n{__doc__}\nStudy flags as in any study (python studies/search.py --help).\n\n{CONFIG_HELP}")
        return 0
    if not argv or argv[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    spec_path, rest = argv[0], argv[1:]
    return main_for(lambda args: load_spec(spec_path, args), __doc__, rest)


if __name__ == "__main__":
    sys.exit(main())
