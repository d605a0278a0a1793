"""The logistic incrementality model: known effects, recency, non-converters, and controls for where intent ends."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from jobs.incrementality import (
    ending_controls,
    exposure_matrix,
    exposures,
    fit_incrementality,
    fit_logistic,
    predict,
    to_arrays,
)
from jobs.synthetic import SyntheticWorld, generate, truth_shares

TRUE = {"search": 1.2, "email": 0.6, "display": 0.0}
INTERCEPT = -2.0


def simulate(n: int, seed: int) -> list[tuple[tuple[tuple[str, float], ...], bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        touches = tuple((c, 0.0) for c in TRUE if rng.random() < 0.4)
        z = INTERCEPT + sum(TRUE[c] for c, _ in touches)
        out.append((touches, rng.random() < 1 / (1 + math.exp(-z))))
    return out


def test_known_effects_are_recovered() -> None:
    fit = fit_logistic(simulate(40_000, seed=1), l2=0.01)
    assert fit.intercept == pytest.approx(INTERCEPT, abs=0.1)
    for channel, w in TRUE.items():
        assert fit.coefficients[channel] == pytest.approx(w, abs=0.1), channel
    assert fit.weights["search"] > fit.weights["email"] > fit.weights["display"]
    assert sum(fit.weights.values()) == pytest.approx(1.0)


def test_a_channel_common_on_converting_paths_without_lift_gets_little() -> None:
    # "direct" is on most converting journeys only because it is on most journeys
    rng = random.Random(2)
    journeys = []
    for _ in range(20_000):
        touches = [("direct", 0.0)] if rng.random() < 0.9 else []
        if rng.random() < 0.3:
            touches.append(("search", 0.0))
        p = 0.05 + (0.25 if any(c == "search" for c, _ in touches) else 0.0)
        journeys.append((tuple(touches), rng.random() < p))
    fit = fit_logistic(journeys)
    assert fit.weights["search"] > 0.9
    assert fit.weights["direct"] < 0.1


def test_older_touches_weigh_less() -> None:
    index = {"search": 0, "email": 1}
    x = exposures([("search", 0.0), ("search", 7.0), ("email", 14.0), ("other", 0.0)], index, half_life_days=7.0)
    assert list(x) == pytest.approx([1.5, 0.25])


def test_the_fit_is_deterministic() -> None:
    data = simulate(3000, seed=5)
    assert fit_logistic(data) == fit_logistic(data)


def test_ending_controls_mark_the_final_channel_and_returns() -> None:
    # journeys: [a, b, a] ends on a, a return; [b] ends on b; []; [x unknown] ends on no known channel
    controls = ending_controls(np.array([0, 1, 0, 1, -1]), np.array([3, 1, 0, 1]), n_channels=2)
    assert controls.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_exposure_matrix_matches_exposures_per_journey() -> None:
    journeys = simulate(50, seed=8)
    names, codes, ages, lengths, _ = to_arrays(
        (tuple((c, float(i)) for i, (c, _) in enumerate(t)), y) for t, y in journeys
    )
    index = {c: i for i, c in enumerate(names)}
    for half_life in (3.0, None):
        x = exposure_matrix(codes, ages, lengths, len(names), half_life)
        start = 0
        for row, n in zip(x, lengths, strict=True):
            touches = [(names[c], a) for c, a in zip(codes[start : start + n], ages[start : start + n], strict=True)]
            assert row == pytest.approx(exposures(touches, index, half_life))
            start += n


def test_the_robust_model_does_not_credit_where_intent_ends() -> None:
    world = SyntheticWorld()
    journeys = generate(world, persons=30_000, seed=2)
    truth = truth_shares(world, journeys)
    data = [(j.touches, j.converted) for j in journeys]
    robust = fit_incrementality(data)
    naive = fit_logistic(data)
    assert naive.weights["direct"] > 0.2  # the confounder, credited
    assert robust.weights["direct"] < 0.1  # true effect 0
    assert max(abs(robust.weights[c] - truth[c]) for c in truth) < 0.1
    assert robust.controls["final:direct"] > 0.5 and robust.controls["final:search"] > 0.5  # where intent ends
    assert robust.half_life_days is None  # the generator has no recency


def test_the_half_life_is_the_most_likely_one() -> None:
    rng = random.Random(4)
    journeys = []
    for _ in range(20_000):
        touches = tuple((c, rng.uniform(0, 20)) for c in TRUE if rng.random() < 0.5)
        z = INTERCEPT + sum(TRUE[c] * 2 * 0.5 ** (age / 3.0) for c, age in touches)
        journeys.append((touches, rng.random() < 1 / (1 + math.exp(-z))))
    fit = fit_incrementality(journeys)
    assert fit.half_life_days == 3.0
    assert fit_incrementality(journeys, half_lives=(30.0, None)).half_life_days == 30.0


def test_predict_is_the_fitted_probability() -> None:
    journeys = [((("search", 1.0), ("email", 0.0)), True), ((("email", 3.0),), False), ((), False)] * 20
    fit = fit_incrementality(journeys, half_lives=(7.0,))
    touches = [("email", 3.0), ("search", 0.0), ("tv", 0.0)]  # tv: never seen, ignored
    x = exposures(touches, {c: i for i, c in enumerate(fit.channels)}, 7.0)
    z = fit.intercept + sum(fit.coefficients[c] * x[i] for i, c in enumerate(fit.channels))
    z += fit.controls["final:search"]  # ends on search, not a return: "return:search" is off
    assert predict(fit, [touches])[0] == pytest.approx(1 / (1 + math.exp(-z)))
    assert 0.0 < predict(fit, [[]])[0] < 0.5


def test_empty_half_lives_are_refused() -> None:
    with pytest.raises(ValueError, match="half_lives is empty"):
        fit_incrementality([((("a", 0.0),), True)], half_lives=())
