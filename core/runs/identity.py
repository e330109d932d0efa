"""What identifies a run, and the one rule by which a recorded identity matches a config.

A run is named by what trains its weights: :func:`config_hash` (hash version 3) covers every config field
but those whose metadata says they train nothing (``core.config.NOT_TRAINED``: the evaluation protocol, where
the run lives, memory budgets) and, of the loss section, the family's name and only the knobs that family
reads (``core.config.LOSS_KNOB`` fields listed in its ``LossFamily.fields``): a SupCon run with another
``loss.beta`` is the same run. Earlier versions named runs too, and their runs are still found, resumed,
re-scored and exported under their old names: version 2 (:func:`v2_hash`, every loss knob) and version 1
(:func:`legacy_hash`, the whole config but its placement, evaluation included). :func:`same_run` is the rule
every reader applies (the run directory's ``config.json``, a checkpoint, ``core.eval``, ``core.export``, a
resumed training): a recorded hash is this config's run when it is the config's hash of any version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from core.config import READ_BY_FAMILY, TRAINS
from core.registry import LOSSES

# Versions 1 and 2 as they were: what they left out, and the fields added since, at their defaults (a config
# away from such a default cannot be a run of that version). Frozen history: new fields never go here.
_V2_UNHASHED = frozenset({"storage_path", "name", "eval"})
_V2_UNHASHED_DATA = ("object_store_mb",)
_ADDED_SINCE_V1 = {("data", "mean"): (0.5,), ("data", "std"): (0.25,), ("data", "object_store_mb"): None,
                   ("eval", "batch_memory_mb"): 256, ("model", "weights"): None,
                   ("model", "sync_bn"): False, ("optim", "exclude_norm_bias_decay"): False,
                   ("eval", "reference_errors"): None, ("model", "resnet_width"): 64, ("eval", "test_limit"): None}
_ADDED_SINCE_V2 = {("model", "resnet_width"): 64}


def _digest(payload: dict) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def config_hash(cfg: Any) -> str:
    """Stable 12-hex-digit identity of what trains the weights (hash version 3), read from the schema."""
    return _digest(_trained(cfg, LOSSES.get(cfg.loss.name).fields))


def _trained(section: Any, knobs: tuple[str, ...]) -> dict:
    """The fields of a config section that train the weights, by their metadata, sections as nested dicts."""
    out = {}
    for f in dataclasses.fields(section):
        if f.metadata.get(TRAINS, True) and (f.name in knobs or not f.metadata.get(READ_BY_FAMILY)):
            value = getattr(section, f.name)
            out[f.name] = _trained(value, knobs) if dataclasses.is_dataclass(value) else value
    return out


def v2_hash(cfg: Any) -> str:
    """The hash version 2 gave this config (every loss knob, the evaluation left out)."""
    payload = {k: v for k, v in cfg.to_dict().items() if k not in _V2_UNHASHED}
    for key in _V2_UNHASHED_DATA:
        del payload["data"][key]
    for (section, key), default in _ADDED_SINCE_V2.items():
        if payload[section][key] == default:
            del payload[section][key]
    return _digest(payload)


def legacy_hash(cfg: Any) -> str | None:
    """The hash version 1 gave this config (evaluation included); None for a config that sets a field
    version 1 did not have to other than its default (no version-1 run can hold it)."""
    payload = {k: v for k, v in cfg.to_dict().items() if k not in ("storage_path", "name")}
    for (section, key), default in _ADDED_SINCE_V1.items():
        value = payload[section].pop(key)
        if (tuple(value) if isinstance(value, list) else value) != default:
            return None
    return _digest(payload)


def run_name(cfg: Any) -> str:
    """The run's directory name: ``name=`` when given, else ``<loss>-<config hash>``."""
    return cfg.name or f"{cfg.loss.name}-{config_hash(cfg)}"


def run_names(cfg: Any) -> list[str]:
    """The names this config's run may have been given, newest version first (one with ``name=``)."""
    if cfg.name:
        return [cfg.name]
    hashes = (config_hash(cfg), v2_hash(cfg), legacy_hash(cfg))
    return list(dict.fromkeys(f"{cfg.loss.name}-{h}" for h in hashes if h is not None))


def same_run(recorded: str | None, cfg: Any) -> bool:
    """Whether a run recorded under the hash ``recorded`` is this config's run (any hash version)."""
    return recorded is not None and recorded in (config_hash(cfg), v2_hash(cfg), legacy_hash(cfg))
