"""The search machinery: the Pareto front, the --loss choices, ASHA only where a metric comes every epoch."""

import numpy as np

from core.losses.registry import family_names
from core.study.search import optuna_search, pareto_front, searchable_losses
from core.study.space import Objective, OptunaSpace


def test_pareto_front_respects_each_direction():
    objectives = [Objective("probe_top1", "max"), Objective("corruption_error", "min")]
    values = np.array([[90.0, 30.0], [95.0, 35.0], [89.0, 29.0], [94.0, 36.0], [91.0, 31.0]])
    # (94, 36) is beaten by (95, 35); (91, 31) is not beaten: more accuracy than (90, 30) for more error
    assert pareto_front(values, objectives) == [0, 1, 2, 4]
    assert pareto_front(values, [objectives[0], Objective("corruption_error", "max")]) == [1, 3]


def test_pareto_front_matches_every_pairwise_comparison_ties_included():
    rng = np.random.default_rng(0)
    directions = [Objective("a", "max"), Objective("b", "min"), Objective("c", "max")]
    for _ in range(200):
        k, n = int(rng.integers(1, 4)), int(rng.integers(1, 40))
        values = rng.integers(0, 4, (n, k)).astype(float)  # few distinct values: many ties and duplicates
        signed = values * np.array([1.0, -1.0, 1.0])[:k]
        beaten = [any((signed[j] >= signed[i]).all() and (signed[j] > signed[i]).any() for j in range(n))
                  for i in range(n)]
        assert pareto_front(values, directions[:k]) == [i for i in range(n) if not beaten[i]]


def test_searchable_losses_are_the_registered_families_with_a_space():
    assert searchable_losses() == [n for n in family_names() if n != "cross_entropy"]
    assert set(searchable_losses()) == {"supcon", "simclr", "varcon", "vsupcon", "vsimclr"}


def test_asha_only_for_one_objective_reported_every_epoch():
    space = OptunaSpace("supcon", seed=0)
    kw = dict(seed=0, name="s", storage=None, num_samples=4, epochs=5, grace_period=2)
    one = optuna_search(space, [Objective("knn_top1", "max")], **kw)
    assert one.scheduler is not None and one.scheduler._max_t == 6 and one.num_samples == 4
    assert optuna_search(space, [Objective("probe_top1", "max")], **kw).scheduler is None  # final metric only
    two = optuna_search(space, [Objective("knn_top1", "max"), Objective("corruption_error", "min")], **kw)
    assert two.scheduler is None and [o.name for o in two.objectives] == ["knn_top1", "corruption_error"]
