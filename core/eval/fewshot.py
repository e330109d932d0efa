"""N-way K-shot episodes with a nearest-prototype (cosine) classifier on frozen features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def few_shot_episodes(feats: Tensor, labels: Tensor, n_way: int, k_shot: int, n_query: int = 15,
                      episodes: int = 200, seed: int = 0) -> tuple[float, float]:
    """Accuracy (%) over ``episodes`` episodes: mean and 95% interval half-width (1.96 s / sqrt(E)).

    Each episode draws ``n_way`` classes, ``k_shot`` support and ``n_query`` query images per class
    (without replacement; ``n_query`` shrinks to what the smallest class allows). All episodes are
    drawn and scored at once (no loop over episodes).
    """
    classes, counts = torch.unique(labels, return_counts=True)
    if n_way > len(classes):
        raise ValueError(f"{n_way}-way episodes need {n_way} classes; the features have {len(classes)}")
    if int(counts.min()) < k_shot + 1:
        raise ValueError(f"{k_shot}-shot episodes need at least {k_shot + 1} images in every class; "
                         f"the smallest class has {int(counts.min())}")
    n_query = min(n_query, int(counts.min()) - k_shot)
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(feats.float(), dim=1)
    # members[c, j]: the j-th image of class c (padded with -1)
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    width = int(counts.max())
    slot = torch.arange(width)
    members = torch.where(slot < counts[:, None], order[(starts[:, None] + slot).clamp(max=len(order) - 1)], -1)
    # per episode: n_way random classes, then k_shot + n_query random members of each
    way = torch.argsort(torch.rand(episodes, len(classes), generator=g), dim=1)[:, :n_way]  # [E, N]
    keys = torch.rand(episodes, n_way, width, generator=g)
    keys = keys.masked_fill(slot >= counts[way][..., None], 2.0)  # padding sorts last
    pick = torch.argsort(keys, dim=2)[..., : k_shot + n_query]  # [E, N, K+Q]
    idx = torch.gather(members[way], 2, pick)
    support, query = feats[idx[..., :k_shot]], feats[idx[..., k_shot:]]  # [E, N, K, D], [E, N, Q, D]
    protos = F.normalize(support.mean(2), dim=-1)  # [E, N, D]
    pred = torch.einsum("enqd,emd->enqm", query, protos).argmax(-1)  # [E, N, Q]
    acc = 100.0 * (pred == torch.arange(n_way)[None, :, None]).float().mean(dim=(1, 2))
    half = 1.96 * acc.std(unbiased=True).item() / math.sqrt(episodes) if episodes > 1 else float("nan")
    return float(acc.mean()), half
