"""What identifies a run, and the one rule by which a recorded identity matches a config.

A run is named by what changes its weights: :func:`config_hash` covers data, augmentation, model,
loss, optimiser, seed, workers and precision, not the evaluation protocol nor where the run is placed
(hash version 2). Runs written before version 2 recorded :func:`legacy_hash` (version 1: the whole
config but its placement, evaluation included). :func:`same_run` is the rule every reader applies (the
run directory's ``config.json``, a checkpoint, ``core.eval``, ``core.export``, a resumed training): a
recorded hash is this config's run when it is the config's hash of either version.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

HASH_VERSION = 2  # 1 (sessions 1-4): the whole config but storage_path and name, evaluation included
# Fields that do not change the trained weights: the evaluation protocol (a finished run is re-scored
# with another one) and where the run is placed or what it is called.
_UNHASHED = frozenset({"storage_path", "name", "eval"})
_UNHASHED_DATA = ("object_store_mb",)  # how much memory the data path holds changes no weight
# fields added since hash version 1, at their defaults: dropped when computing a version-1 hash
_ADDED_SINCE_V1 = {("data", "mean"): (0.5,), ("data", "std"): (0.25,), ("data", "object_store_mb"): None,
                   ("eval", "batch_memory_mb"): 256, ("model", "weights"): None,
                   ("model", "sync_bn"): False, ("optim", "exclude_norm_bias_decay"): False,
                   ("eval", "reference_errors"): None, ("model", "resnet_width"): 64, ("eval", "test_limit"): None}
# fields added since hash version 2 that change weights: left out of the hash at their defaults, so every run
# named before they existed keeps its name
_ADDED_SINCE_V2 = {("model", "resnet_width"): 64}


def _digest(payload: dict) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def config_hash(cfg: Any) -> str:
    """Stable 12-hex-digit identity of what trains the weights (hash version 2)."""
    payload = {k: v for k, v in cfg.to_dict().items() if k not in _UNHASHED}
    for key in _UNHASHED_DATA:
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


def legacy_run_name(cfg: Any) -> str | None:
    """The directory name hash version 1 gave this config (None with ``name=`` or no version-1 hash)."""
    old = legacy_hash(cfg)
    return None if cfg.name or old is None else f"{cfg.loss.name}-{old}"


def same_run(recorded: str | None, cfg: Any) -> bool:
    """Whether a run recorded under the hash ``recorded`` is this config's run (either hash version)."""
    return recorded is not None and recorded in (config_hash(cfg), legacy_hash(cfg))
