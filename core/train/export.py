"""Export a finished run's encoder to use elsewhere: a program plain torch loads, and its backbone in
the constructor's own key names.

    python -m core.export RUN_DIR OUT_DIR       # either a path, or a place in object storage (s3://...)

writes

- ``OUT_DIR/encoder.pt2``: the encoder with its input normalisation, as a ``torch.export`` program
  (any batch size; any height and width where the backbone is fully convolutional, checked against the
  model at other sizes, else the trained size): ``torch.export.load("encoder.pt2").module()(x)`` gives the
  features of float32 ``[B, 3, H, W]`` RGB images in [0, 1], with torch alone (no package of this project);
  ``model.json``'s ``portable`` entry states the input and output shapes, sizes and dtypes;
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
import os
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import DataError, cli_main
from core.fs import filesystem, is_uri, join, write_bytes_atomic
from core.io import write_atomic, write_json_atomic
from core.losses import head_of
from core.losses.registry import loss_family
from core.models import ContrastiveModel, build_model
from core.models.backbones import RESNET_FAMILY
from core.runs.checkpoint import model_checkpoint
from core.runs.identity import config_hash
from core.runs.storage import StoredRun

LOAD_HINTS = {"torchvision": "torchvision.models.get_model({name!r}, weights=None).load_state_dict(sd, strict=False)",
              "timm": "timm.create_model({name!r}, pretrained=False, num_classes=0).load_state_dict(sd)",
              "resnet": "torchvision.models.{name}() + {stem} stem, .load_state_dict(sd, strict=False)",
              "resnet_narrow": "torchvision.models.{name}() with every stage's width scaled to base {width} (core.models."
                               "backbones._rescale) + {stem} stem; or use encoder.pt2, which loads with torch alone",
              "small_cnn": "core.models.encoders.SmallCNN(3, {width}).load_state_dict(sd) (this project's class; "
                           "encoder.pt2 loads with torch alone)"}
PROGRAM = "encoder.pt2"
CHANNELS = 3  # every backbone takes RGB


def export_run(run_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the run's backbone, head and description to ``out_dir`` (a local directory or an object-store
    URI: written locally, then uploaded); returns the description. A run in object storage is read from a
    local copy (``core.runs.storage.StoredRun.open``)."""
    if is_uri(str(out_dir)):
        with tempfile.TemporaryDirectory() as local:
            info = export_run(run_dir, local)
            fs, base = filesystem(str(out_dir))
            fs.create_dir(base, recursive=True)
            for name in sorted(os.listdir(local)):
                write_bytes_atomic(fs, join(base, name), Path(local, name).read_bytes())
            return info
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise DataError(f"{out_dir}: exists and is not a directory; OUT_DIR is the directory the encoder is written to")
    run, out = StoredRun.open(run_dir).run, Path(out_dir)
    cfg = run.run_config()  # the run's own config, refused if edited after the run
    state = model_checkpoint(run, torch.device("cpu"))
    head = loss_family(cfg.loss.name).head
    num_classes = state.model["head.weight"].shape[0] if head == "linear" else 2
    model = build_model(cfg.with_(**{"model.weights": None}), num_classes, head_of(cfg))
    model.load_state_dict(state.model)
    program, sizes = portable_program(model, cfg.data.image_size)
    info = describe(model.encoder, cfg, head, finished=bool(state.final), epoch=state.epoch, sizes=sizes)
    write_atomic(out / PROGRAM, partial(torch.export.save, program))
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


SIZE_CHECKS = (2.0, 0.5)  # other input sizes, as multiples of the trained one, an exported program is run at


def portable_program(model: ContrastiveModel, image_size: int) -> tuple[torch.export.ExportedProgram, str]:
    """The model's features (normalisation included) as a ``torch.export`` program, in eval mode, for float32
    ``[B, 3, H, W]`` inputs of any batch size and, where the backbone is fully convolutional, any height and
    width (checked against the eager model at other sizes); else ``[B, 3, S, S]`` at the trained size. Returns
    the program and what sizes it takes (for ``model.json``)."""
    features = _Features(model).eval()
    example = torch.rand(2, CHANNELS, image_size, image_size)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        try:  # Dim.AUTO: torch.export finds the sizes the model takes (a stride's floor, a fixed pooling)
            program = torch.export.export(features, (example,), dynamic_shapes={"x": {
                0: batch, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}})
            for scale in SIZE_CHECKS:
                size = max(8, int(image_size * scale))
                x = torch.rand(2, CHANNELS, size, size + 4)
                if not torch.allclose(program.module()(x), features(x), atol=1e-4, rtol=1e-4):
                    raise ValueError(f"the exported program differs from the model at {size} x {size + 4}")
            smallest = max(int(r.lower) for r in program.range_constraints.values())
            return program, f"any height and width from {smallest} px (the backbone is fully convolutional)"
        except Exception as exc:  # torch.export's refusals take many types (UserError, guards' AssertionError...)
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else type(exc).__name__
            program = torch.export.export(features, (example,), dynamic_shapes={"x": {0: batch}})
            return program, f"{image_size} x {image_size} only (a program for any size failed: {why})"


def describe(encoder: nn.Module, cfg, head: str, finished: bool, epoch: int, sizes: str = "") -> dict[str, Any]:
    """``model.json``: the backbone as configured, how to load it, and the exported program's inputs.
    ``epochs_trained`` counts from 1, as every message of the platform does."""
    name = cfg.model.backbone
    kind = name.split(":", 1)[0] if ":" in name else ("small_cnn" if name == "small_cnn" else "resnet")
    if kind == "resnet" and cfg.model.base_width() != 64:
        kind = "resnet_narrow"
    size, width = cfg.data.image_size, cfg.model.base_width()
    resnet = kind.startswith("resnet") or bool(RESNET_FAMILY.match(name.split(":", 1)[-1]))
    shape = ["B", CHANNELS, "H", "W"] if sizes.startswith("any") else ["B", CHANNELS, size, size]
    return {"backbone": name, "stem": cfg.model.stem if resnet else None,  # the stem choice applies to ResNets only
            "width": width if kind != "timm" and kind != "torchvision" else None, "feature_dim": encoder.feature_dim,
            "input_size": size, "normalization": {"mean": per_channel(cfg.data.mean), "std": per_channel(cfg.data.std),
                                                  "input": "RGB in [0, 1]"},
            "portable": {"file": PROGRAM, "load": f"torch.export.load({PROGRAM!r}).module()",
                         "input": {"shape": shape, "dtype": "float32", "sizes": sizes or f"{size} x {size}",
                                   "trained_at": f"{size} x {size}", "values": "RGB in [0, 1], NCHW; normalised inside"},
                         "output": {"shape": ["B", encoder.feature_dim], "dtype": "float32"}},
            "head": head, "proj_dim": cfg.model.proj_dim, "config_hash": config_hash(cfg), "epochs_trained": epoch + 1,
            "run_finished": finished, "missing_on_load": list(getattr(encoder, "dropped_keys", ())),
            "load": LOAD_HINTS[kind].format(name=name.split(":", 1)[-1], stem=cfg.model.stem, width=width)}


def per_channel(values: tuple[float, ...]) -> list[float]:
    """A normalisation given once for all channels, as one value per input channel."""
    return list(values) * CHANNELS if len(values) == 1 else list(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)

    def run() -> int:
        info = export_run(args.run_dir, args.out_dir)
        print(json.dumps(info, indent=1))
        print(f"written: {join(args.out_dir, PROGRAM)} (torch.export.load), backbone.pt, head.pt, model.json")
        return 0

    return cli_main(run)


if __name__ == "__main__":
    sys.exit(main())
