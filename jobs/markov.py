"""First-order Markov removal effects, solved in closed form (no path simulation).

Each journey is a path ``start -> c1 -> ... -> cn -> (conversion | null)``; a
journey without touches goes ``start -> conversion`` or ``start -> null``, so
conversions no channel caused stay with ``start``. Transition counts give an
absorbing chain with transient states ``start`` and the channels. The
probability of reaching ``conversion`` from ``start`` solves ``(I - Q) x = r``
(``Q`` transient-to-transient probabilities, ``r`` the one-step probability of
converting). Removing a channel sends every transition into it to ``null``;
its removal effect is ``1 - P(conv without it) / P(conv)``. Weights are the
removal effects normalised to sum to 1. Same paths, same result: a linear solve,
no randomness.

``predict`` gives ``P(convert | journey)`` for a finished journey: under a
first-order chain the path's own transition probabilities cancel, leaving the
odds of absorption from its last state (``start`` if it has no touch),
``conversion / (conversion + null)`` counted after that state, smoothed toward
the overall rate by ``prior`` pseudo-journeys (the overall rate for a state
never seen in training).

>>> paths = [(("search",), True), (("email", "search"), True), (("email",), False)]
>>> fit = removal_effects(paths)
>>> fit.channels
('email', 'search')
>>> {c: round(w, 3) for c, w in fit.weights.items()}
{'email': 0.333, 'search': 0.667}
>>> round(fit.conversion_probability, 3)
0.667
>>> predict(fit, [("email", "search"), ("email",), ()], prior=0.0).tolist()
[1.0, 0.0, 0.6666666666666666]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from jobs.shares import normalised

__all__ = ["PRIOR", "MarkovFit", "fit_counts", "predict", "removal_effects"]

PRIOR = 1.0
"""Pseudo-journeys at the overall conversion rate that ``predict`` adds to each state's counts."""


@dataclass(frozen=True)
class MarkovFit:
    """Removal effects and the weights they give, per channel."""

    channels: tuple[str, ...]
    conversion_probability: float
    """P(conversion) from ``start`` in the full chain."""
    removal_effect: dict[str, float]
    weights: dict[str, float]
    """Removal effects normalised to sum to 1 (all 0 when nothing converts)."""
    journeys: int
    endings: dict[str | None, tuple[int, int]] = field(default_factory=dict)
    """State (``None`` is ``start``) -> (journeys converting, journeys ending without) right after it."""


def removal_effects(paths: Iterable[tuple[Sequence[str], bool]]) -> MarkovFit:
    """Fit the chain on ``(channels in touch order, converted)`` journeys."""
    journeys = list(paths)
    channels = tuple(sorted({c for touches, _ in journeys for c in touches}))
    index = {c: i + 1 for i, c in enumerate(channels)}  # 0 is start
    n = len(channels) + 1
    counts = np.zeros((n, n))
    ends = np.zeros((n, 2))  # columns: conversion, null
    for touches, converted in journeys:
        state = 0
        for channel in touches:
            nxt = index[channel]
            counts[state, nxt] += 1
            state = nxt
        ends[state, 0 if converted else 1] += 1
    return fit_counts(channels, counts, ends, len(journeys))


def fit_counts(channels: Sequence[str], counts: np.ndarray, ends: np.ndarray, journeys: int) -> MarkovFit:
    """Fit from transition counts: state 0 is ``start``, state ``i + 1`` is ``channels[i]``.

    ``counts[a, b]`` counts moves from state ``a`` to ``b``; ``ends[a]`` counts journeys
    ending after ``a`` in conversion (column 0) and in null (column 1).
    """
    channels = tuple(channels)
    index = {c: i + 1 for i, c in enumerate(channels)}
    totals = counts.sum(axis=1) + ends.sum(axis=1)
    totals[totals == 0] = 1.0  # a state never left: all zero rows, absorbed nowhere
    q = counts / totals[:, None]
    r = ends[:, 0] / totals
    base = _conversion_probability(q, r)
    effects: dict[str, float] = {}
    for channel, i in index.items():
        q_removed = q.copy()
        q_removed[:, i] = 0.0  # entering the channel now ends in null
        q_removed[i, :] = 0.0
        r_removed = r.copy()
        r_removed[i] = 0.0
        without = _conversion_probability(q_removed, r_removed)
        effects[channel] = 0.0 if base <= 0 else max(0.0, 1.0 - without / base)
    endings: dict[str | None, tuple[int, int]] = {None: (int(ends[0, 0]), int(ends[0, 1]))}
    endings.update({c: (int(ends[i, 0]), int(ends[i, 1])) for c, i in index.items()})
    return MarkovFit(channels, base, effects, normalised(effects), journeys, endings)


def predict(fit: MarkovFit, paths: Iterable[Sequence[str]], prior: float = PRIOR) -> np.ndarray:
    """``P(convert)`` of each finished journey: its last state's smoothed conversion odds."""
    converted = sum(c for c, _ in fit.endings.values())
    ended = sum(c + n for c, n in fit.endings.values())
    overall = converted / ended if ended else 0.0
    rates: dict[str | None, float] = {}
    for state, (c, n) in fit.endings.items():
        rates[state] = (c + prior * overall) / (c + n + prior) if c + n + prior > 0 else overall
    return np.array([rates.get(path[-1] if path else None, overall) for path in paths], dtype=float)


def _conversion_probability(q: np.ndarray, r: np.ndarray) -> float:
    """P(absorbed in conversion | start) for the transient block ``q`` and conversion column ``r``."""
    x = np.linalg.solve(np.eye(q.shape[0]) - q, r)
    return float(x[0])
