import pytest
import torch

from core.eval.fewshot import few_shot_episodes


def _blobs(classes: int, per_class: int, spread: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return torch.eye(classes, 32)[labels] + spread * torch.randn(len(labels), 32, generator=g), labels


def test_separable_classes_give_full_accuracy_and_zero_interval():
    feats, labels = _blobs(10, 20, 0.0)
    acc, ci = few_shot_episodes(feats, labels, n_way=5, k_shot=1, episodes=50)
    assert acc == 100.0 and ci == 0.0


def test_random_features_are_at_chance():
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(10).repeat_interleave(40)
    feats = torch.randn(400, 32, generator=g)
    acc, ci = few_shot_episodes(feats, labels, n_way=5, k_shot=5, episodes=400, seed=3)
    assert acc == pytest.approx(20.0, abs=3 * ci + 1) and 0 < ci < 3


def test_more_shots_help_on_noisy_features_and_episodes_are_seeded():
    feats, labels = _blobs(10, 30, 0.35)
    one = few_shot_episodes(feats, labels, 5, 1, episodes=300)
    five = few_shot_episodes(feats, labels, 5, 5, episodes=300)
    assert five[0] > one[0] + 2
    assert few_shot_episodes(feats, labels, 5, 1, episodes=300) == one


def test_support_and_query_are_disjoint_members_of_the_drawn_classes():
    # features are the sample's own index: an image in both support and query would be matched exactly
    labels = torch.arange(5).repeat_interleave(3)
    feats = torch.eye(15)  # orthogonal: each query only matches a prototype containing itself
    acc, _ = few_shot_episodes(feats, labels, n_way=5, k_shot=1, n_query=2, episodes=200)
    assert acc == pytest.approx(20.0, abs=4)  # ties between equal (zero) similarities: chance, never 100


def test_bad_requests_fail_clearly():
    feats, labels = _blobs(3, 5, 0.1)
    with pytest.raises(ValueError, match="5-way episodes need 5 classes"):
        few_shot_episodes(feats, labels, 5, 1)
    with pytest.raises(ValueError, match="at least 6 images"):
        few_shot_episodes(feats, labels, 3, 5)
