"""Tenant training: deterministic, same fits as the model modules, held-out choice, the online credit rule."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs import incrementality, markov, shapley
from jobs.holdout import log_loss, split_by_index
from jobs.synthetic import SyntheticWorld, generate
from jobs.train import METHODS, MethodResult, TenantTraining, choose, path_credit, train_tenant

Journeys = list[tuple[tuple[tuple[str, float], ...], bool]]


@pytest.fixture(scope="module")
def journeys() -> Journeys:
    return [(j.touches, j.converted) for j in generate(SyntheticWorld(), persons=20_000, seed=5)]


@pytest.fixture(scope="module")
def training(journeys: Journeys) -> TenantTraining:
    return train_tenant(journeys, seed=3)


def test_the_same_data_and_seed_give_the_same_training(journeys: Journeys, training: TenantTraining) -> None:
    assert train_tenant(journeys, seed=3) == training
    other = train_tenant(journeys, seed=4)
    assert other.methods["markov"].metrics != training.methods["markov"].metrics  # another split


def test_counts_and_what_each_method_hands_the_scorer(journeys: Journeys, training: TenantTraining) -> None:
    assert (training.train_journeys, training.holdout_journeys) == (16_000, 4_000)
    assert training.converting_journeys == sum(conv for _, conv in journeys)
    assert set(training.methods) == set(METHODS) and training.chosen in METHODS
    held = split_by_index(len(journeys), 0.2, seed=3)
    seen = {c for (touches, _), h in zip(journeys, held, strict=True) if not h for c, _ in touches}
    for name, result in training.methods.items():
        assert result.method == name
        assert set(result.channel_weights) == seen
        assert all(0.0 <= w < math.inf for w in result.channel_weights.values())
        assert sum(result.shares.values()) == pytest.approx(1.0)
        assert 0.0 < result.metrics["log_loss"] < 1.0 and 0.5 < result.metrics["auc"] <= 1.0
    assert training.methods["markov"].split == training.methods["shapley"].split == "per_channel"
    assert training.methods["markov"].half_life_days is None is training.methods["shapley"].half_life_days
    assert training.methods["incrementality"].split == "per_touch"


def test_the_fits_are_those_of_the_model_modules_on_the_training_split(
    journeys: Journeys, training: TenantTraining
) -> None:
    held = split_by_index(len(journeys), 0.2, seed=3)
    train = [j for j, h in zip(journeys, held, strict=True) if not h]
    test = [j for j, h in zip(journeys, held, strict=True) if h]
    outcomes = [conv for _, conv in test]

    chain = markov.removal_effects((tuple(c for c, _ in t), conv) for t, conv in train)
    result = training.methods["markov"]
    assert result.channel_weights == pytest.approx(chain.removal_effect, abs=1e-12)
    assert result.shares == pytest.approx(chain.weights, abs=1e-12)
    predicted = markov.predict(chain, [tuple(c for c, _ in t) for t, _ in test])
    assert result.metrics["log_loss"] == pytest.approx(log_loss(predicted, outcomes))

    sets = shapley.shapley_values([({c for c, _ in t}, conv) for t, conv in train], seed=3)
    result = training.methods["shapley"]
    assert result.channel_weights == pytest.approx({c: max(0.0, v) for c, v in sets.values.items()}, abs=1e-12)
    predicted = shapley.predict(sets, [{c for c, _ in t} for t, _ in test])
    assert result.metrics["log_loss"] == pytest.approx(log_loss(predicted, outcomes))

    fit = incrementality.fit_incrementality(train)
    result = training.methods["incrementality"]
    assert result.half_life_days == fit.half_life_days
    assert result.channel_weights == pytest.approx({c: max(0.0, w) for c, w in fit.coefficients.items()}, abs=1e-9)
    assert result.shares == pytest.approx(fit.weights, abs=1e-9)
    predicted = incrementality.predict(fit, [t for t, _ in test])
    assert result.metrics["log_loss"] == pytest.approx(log_loss(predicted, outcomes))


def test_a_channel_seen_only_in_held_out_journeys_gets_no_weight() -> None:
    base = [((("search", 1.0),), True), ((("email", 2.0), ("search", 0.0)), False), ((), False)] * 30
    journeys = [*base, ((("tv", 0.0), ("search", 0.0)), True)]
    seed = next(s for s in range(100) if split_by_index(len(journeys), 0.2, s)[-1])
    training = train_tenant(journeys, seed=seed)
    for result in training.methods.values():
        assert "tv" not in result.channel_weights
        assert math.isfinite(result.metrics["log_loss"])


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_tiny_tenants_train_without_failing(n: int) -> None:
    journeys = [((("search", 1.0),), True), ((), False), ((("email", 0.5),), False)][:n]
    training = train_tenant(journeys)
    assert training.train_journeys + training.holdout_journeys == n
    assert training.train_journeys >= min(n, 1)
    assert training.chosen in METHODS


def test_bad_ages_are_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match="touch age nan is not a finite number of days"):
        train_tenant([((("search", math.nan),), True)])


def test_method_results_are_validated() -> None:
    with pytest.raises(ValueError, match="split 'per_path' of markov"):
        MethodResult("markov", {}, None, "per_path", {}, {})
    with pytest.raises(ValueError, match="half-life of incrementality must be > 0"):
        MethodResult("incrementality", {}, 0.0, "per_touch", {}, {})
    with pytest.raises(ValueError, match="weight of channel 'email' in shapley must be finite and >= 0"):
        MethodResult("shapley", {"email": -0.1}, None, "per_channel", {}, {})


def test_within_one_standard_error_the_earlier_method_is_chosen() -> None:
    rng = np.random.default_rng(0)
    base = rng.exponential(0.3, 2000)
    noise = rng.normal(0.0, 0.05, 2000)
    close = {"incrementality": base + 0.001 + noise, "shapley": base, "markov": base + 0.2}
    assert choose(close) == "incrementality"
    far = {"incrementality": base + 0.05, "shapley": base, "markov": base + 0.2}
    assert choose(far) == "shapley"
    assert choose({m: base for m in METHODS}) == "incrementality"  # exact ties: METHODS order
    assert choose({m: np.zeros(0) for m in METHODS}) == "incrementality"  # nothing held out


def test_path_credit_reproduces_the_models_lift_split(training: TenantTraining) -> None:
    result = training.methods["incrementality"]
    touches = [("email", 9.0), ("search", 4.0), ("social", 2.5), ("search", 0.5)]
    credit = path_credit(result, touches)
    by_channel: defaultdict[str, float] = defaultdict(float)
    for (channel, _), share in zip(touches, credit, strict=True):
        by_channel[channel] += share
    index = {c: i for i, c in enumerate(sorted(result.channel_weights))}
    x = incrementality.exposures(touches, index, result.half_life_days)
    terms = {c: result.channel_weights[c] * x[i] for c, i in index.items()}
    total = sum(terms.values())
    assert dict(by_channel) == pytest.approx({c: terms[c] / total for c in by_channel})


def test_path_credit_shares_a_channel_weight_among_its_touches() -> None:
    result = MethodResult("shapley", {"search": 0.3, "email": 0.1}, None, "per_channel", {}, {})
    credit = path_credit(result, [("search", 5.0), ("search", 3.0), ("search", 1.0), ("email", 0.0)])
    assert credit == pytest.approx([0.25, 0.25, 0.25, 0.25])
    assert path_credit(result, [("email", 2.0), ("display", 1.0)]) == pytest.approx([1.0, 0.0])


def test_path_credit_recency_and_fallbacks() -> None:
    result = MethodResult("incrementality", {"search": 1.0, "email": 0.0}, 2.0, "per_touch", {}, {})
    assert path_credit(result, [("search", 4.0), ("search", 0.0)]) == pytest.approx([0.2, 0.8])
    assert path_credit(result, [("search", -1.0), ("search", 0.0)]) == pytest.approx([0.5, 0.5])  # future: age 0
    assert path_credit(result, [("email", 1.0), ("tv", 0.0)]) == [0.5, 0.5]
    assert path_credit(result, [("search", 1e6), ("email", 0.0)]) == [0.5, 0.5]  # decayed to 0


@given(
    weights=st.dictionaries(st.sampled_from("abcd"), st.floats(0.0, 1e300), max_size=4),
    touches=st.lists(st.tuples(st.sampled_from("abcde"), st.floats(-5.0, 400.0)), max_size=12),
    half_life=st.none() | st.floats(0.01, 1e6),
    split=st.sampled_from(["per_touch", "per_channel"]),
)
def test_path_credits_are_shares(
    weights: dict[str, float], touches: list[tuple[str, float]], half_life: float | None, split: str
) -> None:
    credit = path_credit(MethodResult("markov", weights, half_life, split, {}, {}), touches)
    assert len(credit) == len(touches)
    assert all(0.0 <= c <= 1.0 for c in credit)
    if touches:
        assert math.fsum(credit) == pytest.approx(1.0)
