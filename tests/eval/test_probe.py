"""kNN and the linear probe on features: memory bounded by construction, the same numbers as before."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import core.eval.probe as probe
from core.eval.features import extract
from core.eval.probe import knn_scores, linear_probe
from tests.block_views import BlockViews

REPO = Path(__file__).resolve().parents[2]


def _clusters(n: int, d: int = 16, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centres = torch.randn(classes, d, generator=g) * 3
    return centres[labels] + torch.randn(n, d, generator=g), labels


def test_knn_over_blocks_of_the_bank_equals_one_product(monkeypatch):
    bank, labels = _clusters(3000)
    queries, _ = _clusters(300, seed=1)
    whole = knn_scores(bank, labels, queries, 5, k=50)
    monkeypatch.setattr(probe, "KNN_BLOCK_BYTES", 4 * 300 * 256)  # blocks of 256 bank rows
    blocked = knn_scores(bank, labels, queries, 5, k=50)
    assert torch.allclose(whole, blocked, rtol=1e-5, atol=1e-6)
    assert (whole.argmax(1) == blocked.argmax(1)).all()


def test_knn_memory_does_not_grow_with_bank_times_queries():
    """300,000 x 64 bank, 2,048 queries: one product would hold 1,024 x 300,000 floats (1.2 GB) per chunk."""
    script = ("import resource, torch\nfrom core.eval.probe import knn_scores\n"
              "bank = torch.randn(300_000, 64); labels = torch.randint(0, 10, (300_000,)); q = torch.randn(2048, 64)\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "knn_scores(bank, labels, q, 10, k=200)\n"
              "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    grown = float(out.stdout.strip().splitlines()[-1])
    print(f"kNN peak RSS growth over the bank: {grown:.0f} MiB")
    assert out.returncode == 0 and grown < 400, (grown, out.stderr[-1000:])


def _old_probe(train_feats, train_labels, test_feats, num_classes, epochs, lr=0.1, batch_size=256, seed=0):
    """The probe as it was: the whole bank standardised into a second tensor first."""
    g = torch.Generator().manual_seed(seed)
    mean, std = train_feats.mean(0), train_feats.std(0).clamp_min(1e-6)
    xtr = (train_feats - mean) / std
    clf = nn.Linear(xtr.shape[1], num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf.reset_parameters()
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(xtr.shape[0] / batch_size))
    for _ in range(epochs):
        perm = torch.randperm(xtr.shape[0], generator=g)
        for start in range(0, xtr.shape[0], batch_size):
            i = perm[start: start + batch_size]
            loss = F.cross_entropy(clf(xtr[i]), train_labels[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        return clf((test_feats - mean) / std).softmax(1)


def test_the_probe_standardises_batch_by_batch_to_the_same_numbers():
    feats, labels = _clusters(1000)
    test, test_labels = _clusters(200, seed=1)
    new = linear_probe(feats, labels, test, test_labels, 5, epochs=3)
    assert torch.equal(new.probabilities, _old_probe(feats, labels, test, 5, epochs=3))


class _Encoder(nn.Module):
    def features(self, x):
        return x.flatten(1)[:, :8]


def test_features_gathered_in_place_when_the_size_is_known():
    rng = np.random.default_rng(0)
    batches = [{"image": rng.integers(0, 255, (n, 4, 4, 3), dtype=np.uint8), "label": np.arange(n) % 3,
                "index": np.arange(n) + 100 * i} for i, n in enumerate((5, 7, 3))]
    plain = extract(_Encoder(), batches, torch.device("cpu"))
    for hint in (15, 20, 10):  # exact, too large (bad images), too small (falls back to a list)
        hinted = extract(_Encoder(), batches, torch.device("cpu"), size_hint=hint)
        assert torch.equal(hinted.feats, plain.feats) and torch.equal(hinted.labels, plain.labels)
        assert np.array_equal(hinted.index, plain.index) and hinted.feats.shape == (15, 8)


def test_the_evaluation_pass_keeps_no_view_of_a_finished_batch():
    """An id kept as a view pinned every block of the train split in Ray's object store until the pass
    ended (spilled to disk past the store's size): the pass must keep copies only."""
    rng = np.random.default_rng(0)
    blocks = BlockViews({"image": rng.integers(0, 255, (96, 4, 4, 3), dtype=np.uint8), "label": np.arange(96) % 3,
                         "index": np.arange(96)}, rows_per_block=16)
    out = extract(_Encoder(), blocks, torch.device("cpu"), size_hint=96)
    assert len(blocks.blocks) == 6 and blocks.most_held == 0
    assert np.array_equal(out.index, np.arange(96)) and out.feats.shape == (96, 8)
