"""Export a finished run's encoder to use elsewhere: its backbone in the constructor's own key names.

    python -m core.export RUN_DIR OUT_DIR

writes ``OUT_DIR/backbone.pt`` (the backbone's state_dict), ``OUT_DIR/head.pt`` (the projection,
variational or linear head) and ``OUT_DIR/model.json`` (the backbone exactly as configured, the stem,
the feature dimension, the input normalisation and size, the run's config hash, and how to load it).
The backbone loads into:

- ``torchvision:<name>``: ``torchvision.models.get_model(name, weights=None)`` with only the
  classifier's keys missing (``strict=False``; ``model.json`` lists them);
- ``timm:<name>``: ``timm.create_model(name, pretrained=False, num_classes=0)``, strictly;
- ``resnet18`` / ``resnet50``: ``torchvision.models.resnet18()`` / ``resnet50()`` with the same stem
  change (the CIFAR stem: a 3x3 stride-1 ``conv1``, ``maxpool`` the identity), only ``fc`` missing;
- ``small_cnn``: ``core.models.encoders.SmallCNN(3, width)``, strictly.

Inputs are RGB in [0, 1], normalised as ``(x - mean) / std`` with ``model.json``'s values.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import cli_main
from core.io import write_atomic, write_json_atomic
from core.losses.registry import loss_family
from core.models import build_model
from core.runs.checkpoint import model_checkpoint
from core.runs.identity import config_hash
from core.runs.rundir import RunDir

LOAD_HINTS = {"torchvision": "torchvision.models.get_model({name!r}, weights=None).load_state_dict(sd, strict=False)",
              "timm": "timm.create_model({name!r}, pretrained=False, num_classes=0).load_state_dict(sd)",
              "resnet": "torchvision.models.{name}() + {stem} stem, .load_state_dict(sd, strict=False)",
              "small_cnn": "core.models.encoders.SmallCNN(3, {width}).load_state_dict(sd)"}


def export_run(run_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the run's backbone, head and description to ``out_dir``; returns the description."""
    run, out = RunDir(run_dir), Path(out_dir)
    cfg = run.run_config()  # the run's own config, refused if edited after the run
    state = model_checkpoint(run, torch.device("cpu"))
    head = loss_family(cfg.loss.name).head
    num_classes = state.model["head.weight"].shape[0] if head == "linear" else 2
    model = build_model(cfg.with_(**{"model.weights": None}), num_classes)
    model.load_state_dict(state.model)
    info = describe(model.encoder, cfg, head, finished=bool(state.final), epoch=state.epoch)
    write_atomic(out / "backbone.pt", partial(torch.save, model.encoder.state_dict()))
    write_atomic(out / "head.pt", partial(torch.save, model.head.state_dict()))
    write_json_atomic(out / "model.json", info)
    return info


def describe(encoder: nn.Module, cfg, head: str, finished: bool, epoch: int) -> dict[str, Any]:
    name = cfg.model.backbone
    kind = name.split(":", 1)[0] if ":" in name else ("small_cnn" if name == "small_cnn" else "resnet")
    return {"backbone": name, "stem": cfg.model.stem, "width": cfg.model.width, "feature_dim": encoder.feature_dim,
            "input_size": cfg.data.image_size, "normalization": {"mean": list(cfg.data.mean), "std": list(cfg.data.std),
                                                                 "input": "RGB in [0, 1]"},
            "head": head, "proj_dim": cfg.model.proj_dim, "config_hash": config_hash(cfg), "epoch": epoch,
            "run_finished": finished, "missing_on_load": list(getattr(encoder, "dropped_keys", ())),
            "load": LOAD_HINTS[kind].format(name=name.split(":", 1)[-1], stem=cfg.model.stem, width=cfg.model.width)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)

    def run() -> int:
        info = export_run(args.run_dir, args.out_dir)
        print(json.dumps(info, indent=1))
        print(f"written: {Path(args.out_dir) / 'backbone.pt'}, head.pt, model.json")
        return 0

    return cli_main(run)


if __name__ == "__main__":
    sys.exit(main())
