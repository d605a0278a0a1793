"""Shapley values over channel sets: the axioms hold, exact and sampled agree, seeded beyond 15."""

from __future__ import annotations

import random

import pytest

from jobs.shapley import EXACT_MAX_CHANNELS, _sampled, fit_counts, predict, shapley_values


def random_journeys(channels: list[str], n: int, seed: int) -> list[tuple[set[str], bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        touched = {c for c in channels if rng.random() < 0.35}
        out.append((touched, rng.random() < 0.05 + 0.1 * len(touched & {"search", "email"})))
    return out


def test_efficiency_values_add_up_to_the_grand_coalitions_worth() -> None:
    channels = ["search", "email", "social", "display", "direct", "affiliate"]
    journeys = random_journeys(channels, 5000, seed=1)
    fit = shapley_values(journeys)
    everyone = [c for s, c in journeys if s == set(channels)]
    nobody = [c for s, c in journeys if not s]
    worth = (sum(everyone) / len(everyone) if everyone else 0.0) - (sum(nobody) / len(nobody) if nobody else 0.0)
    assert fit.exact and sum(fit.values.values()) == pytest.approx(worth)
    assert sum(fit.weights.values()) == pytest.approx(1.0)


def test_symmetric_channels_share_equally_and_a_dummy_gets_nothing() -> None:
    journeys = [({"a"}, True), ({"b"}, True), ({"a", "b"}, True), (set(), False)]
    journeys += [({"a", "dummy"}, True), ({"b", "dummy"}, True), ({"a", "b", "dummy"}, True), ({"dummy"}, False)]
    fit = shapley_values(journeys)
    assert fit.values["a"] == pytest.approx(fit.values["b"])
    assert fit.values["dummy"] == pytest.approx(0.0)


def test_sampled_orders_estimate_the_exact_values() -> None:
    journeys = random_journeys(["search", "email", "social", "display", "direct"], 4000, seed=2)
    exact = shapley_values(journeys)
    bits = {c: 1 << i for i, c in enumerate(exact.channels)}
    seen: dict[int, list[int]] = {}
    for touched, conv in journeys:
        m = sum(bits[c] for c in touched)
        seen.setdefault(m, []).append(conv)
    worth = {m: sum(v) / len(v) for m, v in seen.items()}
    estimate = _sampled(worth, len(exact.channels), seed=0, samples=20_000)
    for i, c in enumerate(exact.channels):
        assert estimate[i] == pytest.approx(exact.values[c], abs=0.01)


def test_beyond_the_exact_limit_the_estimate_is_seeded() -> None:
    channels = [f"c{i:02d}" for i in range(EXACT_MAX_CHANNELS + 2)]
    journeys = random_journeys(channels, 3000, seed=4)
    first = shapley_values(journeys, seed=7, samples=300)
    assert not first.exact and len(first.channels) == EXACT_MAX_CHANNELS + 2
    assert shapley_values(journeys, seed=7, samples=300).values == first.values
    assert shapley_values(journeys, seed=8, samples=300).values != first.values


def test_predict_is_the_smoothed_rate_of_the_exact_set() -> None:
    journeys = [({"search"}, True), ({"search"}, False), ({"search"}, True), ({"email"}, False), (set(), False)]
    fit = shapley_values(journeys)
    assert fit.sets == {frozenset({"search"}): (3, 2), frozenset({"email"}): (1, 0), frozenset(): (1, 0)}
    assert predict(fit, [{"search"}, {"email"}, set()], prior=0.0).tolist() == pytest.approx([2 / 3, 0.0, 0.0])
    overall = 2 / 5
    assert predict(fit, [{"search"}])[0] == pytest.approx((2 + overall) / (3 + 1))
    assert predict(fit, [{"search", "email"}, {"tv"}]).tolist() == pytest.approx([overall, overall])  # unseen sets


def test_fit_counts_is_the_fit_from_sets() -> None:
    journeys = random_journeys(["search", "email", "social"], 500, seed=6)
    fit = shapley_values(journeys)
    bits = {c: 1 << i for i, c in enumerate(fit.channels)}
    counts: dict[int, tuple[int, int]] = {}
    for touched, conv in journeys:
        mask = sum(bits[c] for c in touched)
        n, c = counts.get(mask, (0, 0))
        counts[mask] = (n + 1, c + conv)
    assert fit_counts(fit.channels, counts) == fit
