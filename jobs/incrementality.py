"""An incrementality-aware model: logistic regression of conversion on channel exposures.

In the spirit of Shao & Li (2011), it learns from converting *and*
non-converting journeys: ``P(convert) = sigmoid(b + sum_c w_c * x_c)``, where
``x_c`` is the journey's exposure to channel ``c``: each touch adds
``0.5 ** (age / half_life)``, its age measured back from the journey's end, so
recent touches weigh more and repeated ones add up. ``b`` is the rate without
any touch (conversions no channel caused). Fitted by Newton's method with an
L2 penalty on the channel weights (deterministic, no sampling).

A channel's credit on a converting journey is its share of the lift the
journey's exposures give over the baseline, split in proportion to each
channel's positive term ``w_c * x_c``; channels with ``w_c <= 0`` get none.
Weights are those credits summed over the converting journeys, normalised.

>>> journeys = [((("search", 0.0),), True)] * 30 + [((("search", 0.0),), False)] * 10
>>> journeys += [((("display", 0.0),), True)] * 5 + [((("display", 0.0),), False)] * 35
>>> journeys += [((), True)] * 5 + [((), False)] * 35
>>> fit = fit_logistic(journeys)
>>> fit.coefficients["search"] > 1.0, abs(fit.coefficients["display"]) < 0.5
(True, True)
>>> fit.weights  # display converts no better than no touch at all: no credit
{'display': 0.0, 'search': 1.0}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from jobs.shares import normalised

__all__ = ["LogisticFit", "exposures", "fit_logistic"]

Touch = tuple[str, float]
"""(channel, age in days before the journey's end)."""


@dataclass(frozen=True)
class LogisticFit:
    channels: tuple[str, ...]
    intercept: float
    coefficients: dict[str, float]
    weights: dict[str, float]
    """Credit shares over converting journeys (sum to 1; all 0 without any lift)."""
    journeys: int
    iterations: int


def exposures(touches: Sequence[Touch], index: dict[str, int], half_life_days: float) -> np.ndarray:
    """The exposure vector of one journey (channels not in ``index`` are ignored)."""
    x = np.zeros(len(index))
    for channel, age in touches:
        i = index.get(channel)
        if i is not None:
            x[i] += 0.5 ** (max(age, 0.0) / half_life_days)
    return x


def fit_logistic(
    journeys: Iterable[tuple[Sequence[Touch], bool]],
    half_life_days: float = 7.0,
    l2: float = 1.0,
    max_iterations: int = 50,
) -> LogisticFit:
    """Fit on ``(touches, converted)`` journeys; ``l2`` penalises the channel weights, not the intercept."""
    data = list(journeys)
    channels = tuple(sorted({c for touches, _ in data for c, _ in touches}))
    index = {c: i for i, c in enumerate(channels)}
    x = np.array([exposures(t, index, half_life_days) for t, _ in data]).reshape(len(data), len(channels))
    y = np.array([1.0 if conv else 0.0 for _, conv in data])
    design = np.hstack([np.ones((len(data), 1)), x])
    beta = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[0] = 0.0
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))
        gradient = design.T @ (y - p) - penalty * beta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty) + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.max(np.abs(step)) < 1e-8:
            break
    weights_vec = beta[1:]
    credit = np.zeros(len(channels))
    for row, converted in zip(x, y, strict=True):
        if converted:
            terms = np.clip(weights_vec * row, 0.0, None)
            total = terms.sum()
            if total > 0:
                credit += terms / total
    return LogisticFit(
        channels,
        float(beta[0]),
        {c: float(weights_vec[i]) for c, i in index.items()},
        normalised({c: float(credit[i]) for c, i in index.items()}),
        len(data),
        iterations,
    )
