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

>>> paths = [(("search",), True), (("email", "search"), True), (("email",), False)]
>>> fit = removal_effects(paths)
>>> fit.channels
('email', 'search')
>>> {c: round(w, 3) for c, w in fit.weights.items()}
{'email': 0.333, 'search': 0.667}
>>> round(fit.conversion_probability, 3)
0.667
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from jobs.shares import normalised

__all__ = ["MarkovFit", "removal_effects"]


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
    return MarkovFit(channels, base, effects, normalised(effects), len(journeys))


def _conversion_probability(q: np.ndarray, r: np.ndarray) -> float:
    """P(absorbed in conversion | start) for the transient block ``q`` and conversion column ``r``."""
    x = np.linalg.solve(np.eye(q.shape[0]) - q, r)
    return float(x[0])
