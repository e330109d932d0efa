"""How many images one evaluation forward pass encodes: measured from the model's own activations, so a
wide backbone at a large image size gets small chunks and the digits' CNN large ones (at most
``core.data.budget.MAX_CHUNK``, the chunk the evaluation streams' budget is made for)."""

from __future__ import annotations

import torch
from torch import nn

from core.data.budget import MAX_CHUNK

MIN_CHUNK = 16


@torch.no_grad()
def eval_chunk(model: nn.Module, image_size: int, memory_mb: int) -> int:
    """Images per evaluation forward pass: the largest activation of one image, measured on a forward
    pass of two (hooks on every module), times two (a layer's input and output are alive together),
    must fit ``memory_mb`` for the whole chunk."""
    largest = [0]

    def hook(_, __, out) -> None:
        for t in (out if isinstance(out, (tuple, list)) else [getattr(out, "z", out)]):
            if isinstance(t, torch.Tensor):
                largest[0] = max(largest[0], t.numel() * t.element_size() // 2)

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    was = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model.features(torch.zeros(2, 3, image_size, image_size, device=device))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    per_image = 2 * max(largest[0], 3 * image_size ** 2 * 4)
    return int(min(MAX_CHUNK, max(MIN_CHUNK, (memory_mb << 20) // per_image)))
