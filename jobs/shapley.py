"""Shapley values of channels over channel sets: exact up to ``EXACT_MAX_CHANNELS``, seeded beyond.

A coalition's worth ``v(S)`` is the conversion rate of the journeys whose set of
channels is exactly ``S`` (0 for a set never seen; ``v({})`` is the rate of
journeys without touches, conversions no channel caused). So non-converting
journeys count: a channel whose journeys convert no better than without it gets
no credit. A channel's value is its average marginal contribution over all
orders of joining::

    phi_i = sum over S not holding i of |S|! (n - |S| - 1)! / n! * (v(S + i) - v(S))

With ``n <= EXACT_MAX_CHANNELS`` every subset is enumerated (2^n worths, one
pass per channel). Beyond, ``samples`` random orders from ``random.Random(seed)``
estimate it: the same data and seed give the same values. Weights keep the
positive values, normalised to sum to 1.

``predict`` gives ``P(convert | journey)`` as the training conversion rate of
the journey's exact channel set, smoothed toward the overall rate by ``prior``
pseudo-journeys (the overall rate for a set never seen in training).

>>> journeys = [({"search"}, True), ({"search"}, False), ({"email", "search"}, True), (set(), False)]
>>> fit = shapley_values(journeys)
>>> {c: round(v, 3) for c, v in fit.values.items()}
{'email': 0.25, 'search': 0.75}
>>> fit.exact
True
>>> predict(fit, [{"search"}, {"email", "search"}, {"display"}], prior=0.0).tolist()
[0.5, 1.0, 0.5]
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from math import factorial

import numpy as np

from jobs.shares import normalised

__all__ = ["EXACT_MAX_CHANNELS", "PRIOR", "ShapleyFit", "fit_counts", "predict", "shapley_values"]

PRIOR = 1.0
"""Pseudo-journeys at the overall conversion rate that ``predict`` adds to each set's counts."""

EXACT_MAX_CHANNELS = 15
"""Most channels enumerated exactly (2^15 worths); more are estimated from sampled orders."""


@dataclass(frozen=True)
class ShapleyFit:
    """Shapley value and weight per channel."""

    channels: tuple[str, ...]
    values: dict[str, float]
    weights: dict[str, float]
    exact: bool
    journeys: int
    sets: dict[frozenset[str], tuple[int, int]] = field(default_factory=dict)
    """Channel set -> (journeys, conversions) in training."""


def shapley_values(journeys: Iterable[tuple[Set[str], bool]], seed: int = 0, samples: int = 2_000) -> ShapleyFit:
    """Fit on ``(set of channels touched, converted)`` journeys."""
    seen: Counter[frozenset[str]] = Counter()
    converted: Counter[frozenset[str]] = Counter()
    for channels, conv in journeys:
        key = frozenset(channels)
        seen[key] += 1
        converted[key] += conv
    names = tuple(sorted(set().union(*seen) if seen else ()))
    bit = {c: 1 << i for i, c in enumerate(names)}
    counts = {sum(bit[c] for c in key): (n, converted[key]) for key, n in seen.items()}
    return fit_counts(names, counts, seed, samples)


def fit_counts(
    channels: Sequence[str], counts: Mapping[int, tuple[int, int]], seed: int = 0, samples: int = 2_000
) -> ShapleyFit:
    """Fit from ``{channel set as a bit mask: (journeys, conversions)}``; bit ``i`` is ``channels[i]``."""
    names = tuple(channels)
    worth = {mask: conv / n for mask, (n, conv) in counts.items() if n}
    exact = len(names) <= EXACT_MAX_CHANNELS
    values = _exact(worth, len(names)) if exact else _sampled(worth, len(names), seed, samples)
    by_name = {c: values[i] for i, c in enumerate(names)}
    weights = normalised({c: max(0.0, v) for c, v in by_name.items()})
    sets = {
        frozenset(c for i, c in enumerate(names) if mask >> i & 1): (int(n), int(conv))
        for mask, (n, conv) in counts.items()
    }
    return ShapleyFit(names, by_name, weights, exact, sum(n for n, _ in sets.values()), sets)


def predict(fit: ShapleyFit, channel_sets: Iterable[Set[str]], prior: float = PRIOR) -> np.ndarray:
    """``P(convert)`` of each journey from its set of channels: the smoothed rate of that exact set."""
    journeys = sum(n for n, _ in fit.sets.values())
    overall = sum(c for _, c in fit.sets.values()) / journeys if journeys else 0.0
    rates = {key: (c + prior * overall) / (n + prior) if n + prior > 0 else overall for key, (n, c) in fit.sets.items()}
    return np.array([rates.get(frozenset(s), overall) for s in channel_sets], dtype=float)


def _exact(worth: dict[int, float], n: int) -> list[float]:
    coefficient = [factorial(s) * factorial(n - s - 1) / factorial(n) for s in range(n)]
    size = [bin(m).count("1") for m in range(1 << n)]
    values = [0.0] * n
    for i in range(n):
        me = 1 << i
        total = 0.0
        for subset in range(1 << n):
            if subset & me:
                continue
            gain = worth.get(subset | me, 0.0) - worth.get(subset, 0.0)
            if gain:
                total += coefficient[size[subset]] * gain
        values[i] = total
    return values


def _sampled(worth: dict[int, float], n: int, seed: int, samples: int) -> list[float]:
    rng = random.Random(seed)
    order = list(range(n))
    values = [0.0] * n
    for _ in range(samples):
        rng.shuffle(order)
        coalition = 0
        before = worth.get(0, 0.0)
        for i in order:
            coalition |= 1 << i
            after = worth.get(coalition, 0.0)
            values[i] += after - before
            before = after
    return [v / samples for v in values]
