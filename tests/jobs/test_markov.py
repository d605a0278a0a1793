"""Markov removal effects: closed form, hand-checked, deterministic, order-free."""

from __future__ import annotations

import random

import numpy as np
import pytest

from jobs.markov import fit_counts, predict, removal_effects


def test_hand_computed_chain() -> None:
    # start->search 1/3, start->email 2/3; email->search 1/2, email->null 1/2; search->conv 1
    paths = [(("search",), True), (("email", "search"), True), (("email",), False)]
    fit = removal_effects(paths)
    assert fit.conversion_probability == pytest.approx(2 / 3)
    assert fit.removal_effect == pytest.approx({"email": 0.5, "search": 1.0})
    assert fit.weights == pytest.approx({"email": 1 / 3, "search": 2 / 3})


def test_a_channel_only_on_non_converting_paths_gets_nothing() -> None:
    paths = [(("search",), True)] * 5 + [(("display",), False)] * 5
    assert removal_effects(paths).weights == pytest.approx({"display": 0.0, "search": 1.0})


def test_conversions_without_touches_stay_with_start() -> None:
    with_baseline = [(("email",), True)] * 2 + [((), True)] * 2
    fit = removal_effects(with_baseline)
    assert fit.conversion_probability == pytest.approx(1.0)
    assert fit.removal_effect["email"] == pytest.approx(0.5)  # half the conversions need no channel


def test_same_journeys_in_any_order_give_the_same_fit() -> None:
    rng = random.Random(3)
    channels = ["search", "email", "social", "display", "direct"]
    paths = [(tuple(rng.choice(channels) for _ in range(rng.randint(0, 5))), rng.random() < 0.3) for _ in range(2000)]
    first = removal_effects(paths)
    rng.shuffle(paths)
    again = removal_effects(paths)
    assert first.weights == pytest.approx(again.weights, abs=1e-12)
    assert sum(first.weights.values()) == pytest.approx(1.0)
    assert first.journeys == 2000


def test_nothing_converting_gives_zero_weights() -> None:
    fit = removal_effects([(("a", "b"), False)])
    assert fit.conversion_probability == 0.0 and fit.weights == {"a": 0.0, "b": 0.0}


def test_predict_is_the_last_states_conversion_odds() -> None:
    paths = [(("email", "search"), True), (("search",), False), (("email",), False), ((), True), ((), False)]
    fit = removal_effects(paths)
    assert fit.endings == {None: (1, 1), "email": (0, 1), "search": (1, 1)}
    # the chain's own path probabilities cancel: only what follows the last state counts
    assert predict(fit, [("search",), ("email", "search"), ("email",), ()], prior=0.0).tolist() == [0.5, 0.5, 0.0, 0.5]
    overall = 2 / 5
    assert predict(fit, [("email",)])[0] == pytest.approx((0 + overall) / (1 + 1))  # one pseudo-journey
    assert predict(fit, [("tv",), ("search", "tv")]).tolist() == pytest.approx([overall, overall])  # never seen


def test_fit_counts_is_the_fit_from_paths() -> None:
    paths = [(("a", "b"), True), (("b",), False), ((), True)]
    fit = removal_effects(paths)
    counts = np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=float)  # start, a, b
    ends = np.array([[1, 0], [0, 0], [1, 1]], dtype=float)
    assert fit_counts(("a", "b"), counts, ends, 3) == fit
