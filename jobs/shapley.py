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

>>> journeys = [({"search"}, True), ({"search"}, False), ({"email", "search"}, True), (set(), False)]
>>> fit = shapley_values(journeys)
>>> {c: round(v, 3) for c, v in fit.values.items()}
{'email': 0.25, 'search': 0.75}
>>> fit.exact
True
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Set
from dataclasses import dataclass
from math import factorial

from jobs.shares import normalised

__all__ = ["EXACT_MAX_CHANNELS", "ShapleyFit", "shapley_values"]

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


def shapley_values(journeys: Iterable[tuple[Set[str], bool]], seed: int = 0, samples: int = 2_000) -> ShapleyFit:
    """Fit on ``(set of channels touched, converted)`` journeys."""
    seen: Counter[frozenset[str]] = Counter()
    converted: Counter[frozenset[str]] = Counter()
    count = 0
    for channels, conv in journeys:
        key = frozenset(channels)
        seen[key] += 1
        converted[key] += conv
        count += 1
    names = tuple(sorted(set().union(*seen) if seen else ()))
    bit = {c: 1 << i for i, c in enumerate(names)}
    worth: dict[int, float] = {}
    for key, n in seen.items():
        worth[sum(bit[c] for c in key)] = converted[key] / n
    exact = len(names) <= EXACT_MAX_CHANNELS
    values = _exact(worth, len(names)) if exact else _sampled(worth, len(names), seed, samples)
    by_name = {c: values[i] for i, c in enumerate(names)}
    weights = normalised({c: max(0.0, v) for c, v in by_name.items()})
    return ShapleyFit(names, by_name, weights, exact, count)


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
