"""Held-out splits are deterministic and sized; log loss and ROC AUC match hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.holdout import log_loss, log_losses, roc_auc, split_by_id, split_by_index


@pytest.mark.parametrize(
    ("predicted", "converted", "auc"),
    [
        ([0.9, 0.8, 0.2, 0.1], [True, True, False, False], 1.0),  # perfect ranking
        ([0.1, 0.2, 0.8, 0.9], [True, True, False, False], 0.0),  # reversed
        ([0.4, 0.4, 0.4, 0.4], [True, False, True, False], 0.5),  # all tied
        ([0.9, 0.5, 0.5, 0.1], [True, True, False, False], 0.875),  # one tied pair of four counts half
        ([0.3, 0.5, 0.8], [True, False, True], 0.5),  # one of two pairs ordered right
    ],
)
def test_auc_by_hand(predicted: list[float], converted: list[bool], auc: float) -> None:
    assert roc_auc(predicted, converted) == pytest.approx(auc)


def test_auc_is_undefined_with_one_class() -> None:
    assert math.isnan(roc_auc([0.2, 0.3], [True, True]))
    assert math.isnan(roc_auc([], []))


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=40))
def test_auc_is_the_share_of_correctly_ordered_pairs(items: list[tuple[int, bool]]) -> None:
    scores = [s / 5 for s, _ in items]
    labels = [y for _, y in items]
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    auc = roc_auc(scores, labels)
    if not pos or not neg:
        assert math.isnan(auc)
        return
    pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert auc == pytest.approx(pairs / (len(pos) * len(neg)))


def test_log_loss_of_known_values() -> None:
    assert log_loss([0.5, 0.5], [True, False]) == pytest.approx(math.log(2))
    assert log_loss([0.8, 0.25], [True, False]) == pytest.approx(-(math.log(0.8) + math.log(0.75)) / 2)
    assert log_losses([0.9, 0.9], [True, False]) == pytest.approx([-math.log(0.9), -math.log(0.1)])


def test_log_loss_clips_certain_mistakes() -> None:
    assert log_loss([0.0], [True]) == pytest.approx(-math.log(1e-15))
    assert log_loss([1.0], [False], eps=1e-6) == pytest.approx(-math.log(1e-6), rel=1e-6)
    assert log_loss([1.0, 0.0], [True, False]) < 1e-12


def test_log_loss_needs_one_prediction_per_outcome() -> None:
    assert math.isnan(log_loss([], []))
    with pytest.raises(ValueError, match="3 predictions for 2 outcomes"):
        log_loss([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="one prediction per journey"):
        roc_auc([0.1], [True, False])


def test_split_by_index_is_seeded_and_sized() -> None:
    first = split_by_index(1000, 0.2, seed=3)
    assert first.dtype == bool and first.sum() == 200
    assert np.array_equal(first, split_by_index(1000, 0.2, seed=3))
    assert not np.array_equal(first, split_by_index(1000, 0.2, seed=4))


@pytest.mark.parametrize(
    ("n", "fraction", "held"), [(0, 0.2, 0), (1, 0.5, 0), (2, 0.9, 1), (10, 0.0, 0), (10, 0.25, 2)]
)
def test_split_by_index_leaves_journeys_to_train(n: int, fraction: float, held: int) -> None:
    assert split_by_index(n, fraction, seed=0).sum() == held


def test_split_by_id_is_stable_per_id() -> None:
    ids = [f"person-{i}" for i in range(4000)]
    mask = split_by_id(ids, 0.25, seed=1)
    assert 0.22 < mask.mean() < 0.28
    # an id keeps its side when other ids come and go
    assert np.array_equal(split_by_id(ids[::3], 0.25, seed=1), mask[::3])
    assert not np.array_equal(split_by_id(ids, 0.25, seed=2), mask)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_fraction_must_leave_training_data(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"holdout fraction must be in \[0, 1\)"):
        split_by_index(10, fraction, seed=0)
    with pytest.raises(ValueError, match="holdout fraction"):
        split_by_id(["a"], fraction, seed=0)
