"""Export a finished run's encoder to use elsewhere: a program plain torch loads, and its backbone in
the constructor's own key names.

    python -m core.export RUN_DIR OUT_DIR       # RUN_DIR: a path, or a run in object storage (s3://...)

writes

- ``OUT_DIR/encoder.pt2``: the encoder with its input normalisation, as a ``torch.export`` program
  (any batch size): ``torch.export.load("encoder.pt2").module()(x)`` gives the features of float32
  ``[B, 3, S, S]`` RGB images in [0, 1], with torch alone (no package of this project);
  ``model.json``'s ``portable`` entry states the input and output shapes and dtypes;
- ``OUT_DIR/backbone.pt`` (the backbone's state_dict, without the normalisation), ``OUT_DIR/head.pt``
  (the projection, variational or linear head) and ``OUT_DIR/model.json`` (the backbone exactly as
  configured, the stem, the feature dimension, the input normalisation (one value per channel) and
  size, the run's config hash, and how to load it).

The backbone's state_dict loads into:

- ``torchvision:<name>``: ``torchvision.models.get_model(name, weights=None)`` with only the
  classifier's keys missing (``strict=False``; ``model.json`` lists them);
- ``timm:<name>``: ``timm.create_model(name, pretrained=False, num_classes=0)``, strictly;
- ``resnet18`` / ``resnet50``: ``torchvision.models.resnet18()`` / ``resnet50()`` with the same stem
  change (the CIFAR stem: a 3x3 stride-1 ``conv1``, ``maxpool`` the identity), only ``fc`` missing;
- ``small_cnn``: ``core.models.encoders.SmallCNN(3, width)``, strictly (this project's class: use
  ``encoder.pt2`` elsewhere).

Inputs of the state_dicts are RGB in [0, 1], normalised as ``(x - mean) / std`` with ``model.json``'s
values; ``encoder.pt2`` normalises itself.
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
from core.models import ContrastiveModel, build_model
from core.runs.checkpoint import model_checkpoint
from core.runs.identity import config_hash
from core.runs.rundir import RunDir
from core.runs.storage import local_copy

LOAD_HINTS = {"torchvision": "torchvision.models.get_model({name!r}, weights=None).load_state_dict(sd, strict=False)",
              "timm": "timm.create_model({name!r}, pretrained=False, num_classes=0).load_state_dict(sd)",
              "resnet": "torchvision.models.{name}() + {stem} stem, .load_state_dict(sd, strict=False)",
              "small_cnn": "core.models.encoders.SmallCNN(3, {width}).load_state_dict(sd) (this project's class; "
                           "encoder.pt2 loads with torch alone)"}
PROGRAM = "encoder.pt2"
CHANNELS = 3  # every backbone takes RGB


def export_run(run_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the run's backbone, head and description to ``out_dir``; returns the description. A run in
    object storage is read from a local copy (``core.runs.storage.local_copy``)."""
    run_dir, _ = local_copy(str(run_dir))
    run, out = RunDir(run_dir), Path(out_dir)
    cfg = run.run_config()  # the run's own config, refused if edited after the run
    state = model_checkpoint(run, torch.device("cpu"))
    head = loss_family(cfg.loss.name).head
    num_classes = state.model["head.weight"].shape[0] if head == "linear" else 2
    model = build_model(cfg.with_(**{"model.weights": None}), num_classes)
    model.load_state_dict(state.model)
    info = describe(model.encoder, cfg, head, finished=bool(state.final), epoch=state.epoch)
    write_atomic(out / PROGRAM, partial(torch.export.save, portable_program(model, cfg.data.image_size)))
    write_atomic(out / "backbone.pt", partial(torch.save, model.encoder.state_dict()))
    write_atomic(out / "head.pt", partial(torch.save, model.head.state_dict()))
    write_json_atomic(out / "model.json", info)
    return info


class _Features(nn.Module):
    """``model.features``: the encoder of images in [0, 1], normalisation included, and nothing else of
    the model (its head stays out of ``encoder.pt2``)."""

    def __init__(self, model: ContrastiveModel) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.register_buffer("mean", model.mean.detach().clone())
        self.register_buffer("std", model.std.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder((x - self.mean) / self.std)  # as ContrastiveModel.features


def portable_program(model: ContrastiveModel, image_size: int) -> torch.export.ExportedProgram:
    """The model's features (normalisation included) as a ``torch.export`` program, in eval mode, for
    float32 ``[B, 3, image_size, image_size]`` inputs of any batch size ``B``."""
    example = torch.rand(2, CHANNELS, image_size, image_size)
    with torch.no_grad():
        return torch.export.export(_Features(model).eval(), (example,),
                                   dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})


def describe(encoder: nn.Module, cfg, head: str, finished: bool, epoch: int) -> dict[str, Any]:
    name = cfg.model.backbone
    kind = name.split(":", 1)[0] if ":" in name else ("small_cnn" if name == "small_cnn" else "resnet")
    size = cfg.data.image_size
    return {"backbone": name, "stem": cfg.model.stem, "width": cfg.model.width, "feature_dim": encoder.feature_dim,
            "input_size": size, "normalization": {"mean": per_channel(cfg.data.mean), "std": per_channel(cfg.data.std),
                                                  "input": "RGB in [0, 1]"},
            "portable": {"file": PROGRAM, "load": f"torch.export.load({PROGRAM!r}).module()",
                         "input": {"shape": ["B", CHANNELS, size, size], "dtype": "float32",
                                   "values": "RGB in [0, 1], NCHW; normalised inside"},
                         "output": {"shape": ["B", encoder.feature_dim], "dtype": "float32"}},
            "head": head, "proj_dim": cfg.model.proj_dim, "config_hash": config_hash(cfg), "epoch": epoch,
            "run_finished": finished, "missing_on_load": list(getattr(encoder, "dropped_keys", ())),
            "load": LOAD_HINTS[kind].format(name=name.split(":", 1)[-1], stem=cfg.model.stem, width=cfg.model.width)}


def per_channel(values: tuple[float, ...]) -> list[float]:
    """A normalisation given once for all channels, as one value per input channel."""
    return list(values) * CHANNELS if len(values) == 1 else list(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)

    def run() -> int:
        info = export_run(args.run_dir, args.out_dir)
        print(json.dumps(info, indent=1))
        print(f"written: {Path(args.out_dir) / PROGRAM} (torch.export.load), backbone.pt, head.pt, model.json")
        return 0

    return cli_main(run)


if __name__ == "__main__":
    sys.exit(main())
