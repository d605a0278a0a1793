"""The logistic incrementality model: recovers known effects, weighs recency, learns from non-converters."""

from __future__ import annotations

import math
import random

import pytest

from jobs.incrementality import exposures, fit_logistic

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
