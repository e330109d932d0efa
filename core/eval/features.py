"""One streaming pass over an evaluation split: features and a few numbers per image, never pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from core.data.augment import eval_view
from core.data.bad_images import BadImages
from core.data.block_ops import owned
from core.errors import EvaluationError


class NonFiniteFeatures(EvaluationError):
    """The encoder gives inf/NaN features: the run diverged (a finite loss, then weights too large)."""


EVAL_BATCH = 512  # images per forward pass in evaluation
Batches = Iterable[dict[str, np.ndarray]]  # {"image": uint8 [B, H, W, C], "label": [B], "index": [B], "ok"?, "path"?}


def iter_numpy(ds: Any, batch_size: int = EVAL_BATCH) -> Iterator[dict[str, np.ndarray]]:
    """Numpy batches from a Ray Dataset / DataIterator, or pass through an iterable of batches."""
    if hasattr(ds, "iter_batches"):
        return iter(ds.iter_batches(batch_size=batch_size, batch_format="numpy"))
    return iter(ds)


@dataclass
class Features:
    """What one pass over an evaluation split keeps: features and per-image numbers, no pixels."""

    feats: Tensor  # [N, D] encoder features (float32, CPU)
    labels: Tensor  # [N]
    index: np.ndarray  # [N] stable sample ids
    embedding: Tensor | None = None  # [N, d] the head's eval-mode embedding
    logvar: Tensor | None = None  # [N, d] posterior log-variance (variational heads)
    view_pairs: tuple[Tensor, Tensor] | None = None  # two augmented views' embeddings (alignment/uniformity)
    bad: BadImages = field(default_factory=BadImages)


class _Rows:
    """The rows of one column gathered batch by batch: into one tensor made for ``capacity`` rows when the
    split's size is known (memory: the result, once), else as a list joined at the end (twice, briefly)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity, self.parts, self.buffer, self.n = capacity, [], None, 0

    def append(self, rows: Tensor) -> None:
        if self.capacity is None:
            self.parts.append(rows)
            return
        if self.buffer is None:
            self.buffer = rows.new_empty((self.capacity, *rows.shape[1:]))
        if self.n + len(rows) > self.capacity:  # a wrong hint: carry on as a list
            self.parts, self.capacity, self.buffer = [self.buffer[: self.n], rows], None, None
            return
        self.buffer[self.n: self.n + len(rows)] = rows
        self.n += len(rows)

    def __bool__(self) -> bool:
        return bool(self.parts) or self.n > 0

    def result(self) -> Tensor | None:
        if self.buffer is not None:
            return self.buffer[: self.n]
        return torch.cat(self.parts) if self.parts else None


@torch.no_grad()
def extract(model: nn.Module, batches: Batches, device: torch.device, *, embedding: bool = False,
            logvar: bool = False, views: Callable[[Tensor, np.ndarray], Tensor] | None = None,
            bad: BadImages | None = None, size_hint: int | None = None, bar=None) -> Features:
    """One streaming pass: encoder features (and optionally the head embedding, the posterior
    log-variance and two augmented views' embeddings) of every decodable image, in eval mode.
    ``size_hint``: the split's image count when known; the features are then gathered in place (memory
    ``4 x feature_dim`` bytes per image, held once); ``bar``: a :class:`core.progress.Progress` advanced by
    each batch's images."""
    was_training = model.training
    model.eval()
    bad = bad or BadImages(where="evaluation: ")
    cols = {k: _Rows(size_hint if k in ("feats", "labels") else None)
            for k in ("feats", "labels", "emb", "lv", "v0", "v1")}
    index: list[np.ndarray] = []
    try:
        for batch in batches:
            batch = bad.keep(batch)
            if len(batch["label"]) == 0:
                continue
            images = torch.from_numpy(np.require(batch["image"], requirements="W"))
            x = eval_view(images).to(device, non_blocking=True)
            out = model.encode(x) if embedding or logvar else None  # the head only where its output is kept
            cols["feats"].append((out.features if out is not None else model.features(x)).float().cpu())
            cols["labels"].append(torch.tensor(np.asarray(batch["label"]), dtype=torch.long))
            index.append(owned(batch["index"], np.int64))  # not a view: it would pin the block
            if embedding:
                cols["emb"].append(out.z.float().cpu())
            if logvar and out.logvar is not None:
                cols["lv"].append(out.logvar.float().cpu())
            if views is not None:
                pair = views(images, batch["index"]).to(device)  # [B, 2, C, H, W]
                cols["v0"].append(model(pair[:, 0]).z.float().cpu())
                cols["v1"].append(model(pair[:, 1]).z.float().cpu())
            if bar is not None:
                bar.update(len(batch["label"]))
    finally:
        model.train(was_training)
    if not cols["feats"]:
        raise EvaluationError("evaluation split is empty" + (f" ({len(bad.paths)} undecodable images)"
                                                              if bad.paths else ""))

    feats = cols["feats"].result()
    if not bool(torch.isfinite(feats).all()):
        raise NonFiniteFeatures("the encoder's features are not finite (the weights blew up)")
    return Features(feats, cols["labels"].result(), np.concatenate(index), cols["emb"].result(), cols["lv"].result(),
                    (cols["v0"].result(), cols["v1"].result()) if cols["v0"] else None, bad)


def check_classes(split: str, f: Features, num_classes: int) -> None:
    """A class that lost every image to decoding errors cannot be scored: refuse rather than report
    accuracy over the remaining classes as if nothing happened."""
    present = set(torch.unique(f.labels).tolist())
    lost = sorted(set(f.bad.labels) - present)
    if lost:
        raise EvaluationError(f"{split}: every image of class(es) {lost} is undecodable (e.g. {f.bad.paths[0]!r}); "
                              f"refusing to score {num_classes} classes on the rest")
