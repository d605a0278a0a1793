"""An incrementality model: logistic regression of conversion on channel exposures.

In the spirit of Shao & Li (2011), it learns from converting *and*
non-converting journeys: ``P(convert) = sigmoid(b + sum_c w_c * x_c + e)``,
where ``x_c`` is the journey's exposure to channel ``c``: each touch adds
``0.5 ** (age / half_life)`` (1 without a half-life), its age measured back from
the journey's end, so recent touches weigh more and repeated ones add up. ``b``
is the rate without any touch (conversions no channel caused). Fitted by a
damped Newton's method with an L2 penalty on every coefficient but ``b``.

``e`` are *ending controls* (``fit_incrementality``; off in ``fit_logistic``):
nuisance terms for how the journey ends, one per channel for "the final touch
is on ``c``" and one for "... and ``c`` was touched before" (a return). They are
fitted with the exposures but never credited. Assumptions that make the
exposure weights causal:

- Intent shows in how a journey ends: people who would buy anyway come back by
  navigational search or by typing the URL, so the final touch's channel and
  whether it is a return carry their higher baseline. Comparing journeys that
  end alike, a channel's weight is learned from its touches *before* the end.
- Given how the journey ends, earlier exposures are as good as random (no other
  confounder), and a channel's effect is the same whether or not it is last.
  A channel almost only ever seen as the final touch cannot be told from its
  control: the L2 penalty then splits its effect between them (under-credit).
- Effects add on the log-odds scale; the half-life (none, or one of
  ``HALF_LIVES``) is the one of highest penalised likelihood (fitted, not set).

A channel's credit on a journey is its share of the positive exposure terms
``w_c * x_c``; channels with ``w_c <= 0`` get none. ``weights`` weigh each
journey by the conversions its exposures caused in the model,
``P(convert) - P(convert without the credited terms)``: the expected
incremental conversions per channel over all journeys, normalised.

>>> journeys = [((("search", 0.0),), True)] * 30 + [((("search", 0.0),), False)] * 10
>>> journeys += [((("display", 0.0),), True)] * 5 + [((("display", 0.0),), False)] * 35
>>> journeys += [((), True)] * 5 + [((), False)] * 35
>>> fit = fit_logistic(journeys)
>>> fit.coefficients["search"] > 1.0, abs(fit.coefficients["display"]) < 0.5
(True, True)
>>> fit.weights  # display converts no better than no touch at all: no credit
{'display': 0.0, 'search': 1.0}
>>> predict(fit, [[("search", 0.0)], []]).round(2).tolist()  # P(convert), shrunk a little by the L2 penalty
[0.69, 0.18]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from jobs.shares import normalised

__all__ = [
    "HALF_LIVES",
    "LogisticFit",
    "ending_controls",
    "exposure_matrix",
    "exposures",
    "fit_arrays",
    "fit_incrementality",
    "fit_logistic",
    "predict",
    "predict_arrays",
    "to_arrays",
]

Touch = tuple[str, float]
"""(channel, age in days before the journey's end)."""

HALF_LIVES: tuple[float | None, ...] = (1.0, 3.0, 7.0, 14.0, 30.0, None)
"""Half-lives (days) ``fit_incrementality`` chooses from; ``None`` is no recency."""


@dataclass(frozen=True)
class LogisticFit:
    channels: tuple[str, ...]
    intercept: float
    coefficients: dict[str, float]
    """Exposure weight ``w_c`` per channel (what is credited)."""
    weights: dict[str, float]
    """Credit shares: expected incremental conversions per channel, normalised (all 0 without lift)."""
    journeys: int
    iterations: int
    half_life_days: float | None = 7.0
    controls: dict[str, float] = field(default_factory=dict)
    """Ending-control coefficients, ``"final:<channel>"`` and ``"return:<channel>"`` (empty when off)."""
    log_likelihood: float = 0.0
    """Penalised log-likelihood at the fit, on the training journeys."""


def exposures(touches: Sequence[Touch], index: dict[str, int], half_life_days: float | None) -> np.ndarray:
    """The exposure vector of one journey (channels not in ``index`` are ignored)."""
    x = np.zeros(len(index))
    for channel, age in touches:
        i = index.get(channel)
        if i is not None:
            x[i] += 1.0 if half_life_days is None else 0.5 ** (max(age, 0.0) / half_life_days)
    return x


def to_arrays(
    journeys: Iterable[tuple[Sequence[Touch], bool]], channels: Sequence[str] | None = None
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(channels, codes, ages, lengths, converted)``: touches flattened in journey order.

    ``codes[k]`` is the index in ``channels`` (sorted seen channels unless given) of
    touch ``k``'s channel, -1 for a channel not in a given ``channels``.

    >>> to_arrays([((("b", 2.0), ("a", 0.0)), True), ((), False)])[:2]
    (('a', 'b'), array([1, 0]))
    """
    data = list(journeys)
    names = tuple(sorted({c for touches, _ in data for c, _ in touches})) if channels is None else tuple(channels)
    index = {c: i for i, c in enumerate(names)}
    codes = np.array([index.get(c, -1) for touches, _ in data for c, _ in touches], dtype=np.int64)
    ages = np.array([a for touches, _ in data for _, a in touches], dtype=float)
    lengths = np.array([len(touches) for touches, _ in data], dtype=np.int64)
    converted = np.array([bool(conv) for _, conv in data], dtype=bool)
    return names, codes, ages, lengths, converted


def exposure_matrix(
    codes: np.ndarray, ages: np.ndarray, lengths: np.ndarray, n_channels: int, half_life_days: float | None
) -> np.ndarray:
    """``(journeys, channels)`` exposures, as :func:`exposures` per journey (code -1 ignored)."""
    journey = np.repeat(np.arange(len(lengths)), lengths)
    known = codes >= 0
    decay = np.ones(len(codes)) if half_life_days is None else 0.5 ** (np.maximum(ages, 0.0) / half_life_days)
    cell = journey[known] * n_channels + codes[known]
    flat = np.bincount(cell, weights=decay[known], minlength=len(lengths) * n_channels)
    return flat.reshape(len(lengths), n_channels)


def ending_controls(codes: np.ndarray, lengths: np.ndarray, n_channels: int) -> np.ndarray:
    """``(journeys, 2 * channels)``: one-hot of the final touch's channel, then the same when it is a return.

    >>> ending_controls(np.array([0, 1, 0, 1]), np.array([3, 1, 0]), 2).astype(int).tolist()
    [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    """
    n = len(lengths)
    out = np.zeros((n, 2 * n_channels))
    has = np.flatnonzero(lengths > 0)
    last = codes[np.cumsum(lengths)[has] - 1]
    journey = np.repeat(np.arange(n), lengths)
    final = np.full(n, -1)
    final[has] = last
    on_final = np.bincount(journey, weights=(codes == final[journey]) & (codes >= 0), minlength=n)
    known = last >= 0
    rows, cols = has[known], last[known]
    out[rows, cols] = 1.0
    out[rows, n_channels + cols] = (on_final[rows] > 1).astype(float)
    return out


def fit_logistic(
    journeys: Iterable[tuple[Sequence[Touch], bool]],
    half_life_days: float | None = 7.0,
    l2: float = 1.0,
    max_iterations: int = 50,
    controls: bool = False,
) -> LogisticFit:
    """Fit on ``(touches, converted)`` journeys with one half-life; ``l2`` spares the intercept."""
    names, codes, ages, lengths, converted = to_arrays(journeys)
    return fit_arrays(names, codes, ages, lengths, converted, (half_life_days,), l2, max_iterations, controls)


def fit_incrementality(
    journeys: Iterable[tuple[Sequence[Touch], bool]],
    half_lives: Sequence[float | None] = HALF_LIVES,
    l2: float = 1.0,
    max_iterations: int = 50,
) -> LogisticFit:
    """The confounder-robust model: ending controls on, half-life chosen from ``half_lives``."""
    names, codes, ages, lengths, converted = to_arrays(journeys)
    return fit_arrays(names, codes, ages, lengths, converted, half_lives, l2, max_iterations, controls=True)


def fit_arrays(
    channels: Sequence[str],
    codes: np.ndarray,
    ages: np.ndarray,
    lengths: np.ndarray,
    converted: np.ndarray,
    half_lives: Sequence[float | None],
    l2: float = 1.0,
    max_iterations: int = 50,
    controls: bool = False,
) -> LogisticFit:
    """Fit on flat arrays (:func:`to_arrays`); of ``half_lives``, the first of highest penalised likelihood wins."""
    if not half_lives:
        raise ValueError("half_lives is empty: give at least one half-life (or None for no recency)")
    n_channels = len(channels)
    y = converted.astype(float)
    ending = ending_controls(codes, lengths, n_channels) if controls else np.zeros((len(lengths), 0))
    design = np.empty((len(lengths), 1 + n_channels + ending.shape[1]))  # [1, exposures, ending controls]
    design[:, 0] = 1.0
    design[:, 1 + n_channels :] = ending
    penalty = np.full(design.shape[1], l2)
    penalty[0] = 0.0
    best: tuple[float, float | None, np.ndarray, np.ndarray, int] | None = None
    beta = np.zeros(len(penalty))
    for half_life in half_lives:  # warm-started from the previous half-life's fit
        x = exposure_matrix(codes, ages, lengths, n_channels, half_life)
        design[:, 1 : 1 + n_channels] = x
        beta, iterations, loglik = _newton(design, y, penalty, beta, max_iterations)
        if best is None or loglik > best[0] + 1e-9 * abs(best[0]):  # a tie keeps the earlier half-life
            best = (loglik, half_life, beta.copy(), x, iterations)
    assert best is not None
    loglik, half_life, beta, x, iterations = best
    w = beta[1 : 1 + n_channels]
    z = beta[0] + x @ w + ending @ beta[1 + n_channels :]
    credit = _incremental_credit(z, x, w)
    names = [f"final:{c}" for c in channels] + [f"return:{c}" for c in channels] if controls else []
    return LogisticFit(
        tuple(channels),
        float(beta[0]),
        {c: float(w[i]) for i, c in enumerate(channels)},
        normalised({c: float(credit[i]) for i, c in enumerate(channels)}),
        len(lengths),
        iterations,
        half_life,
        {name: float(v) for name, v in zip(names, beta[1 + n_channels :], strict=True)},
        float(loglik),
    )


def predict(fit: LogisticFit, journeys: Iterable[Sequence[Touch]]) -> np.ndarray:
    """``P(convert)`` of each journey's touches under ``fit`` (channels it never saw are ignored)."""
    _, codes, ages, lengths, _ = to_arrays(((touches, False) for touches in journeys), fit.channels)
    return predict_arrays(fit, codes, ages, lengths)


def predict_arrays(fit: LogisticFit, codes: np.ndarray, ages: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """:func:`predict` on flat arrays whose codes index ``fit.channels`` (-1: unknown, ignored)."""
    n_channels = len(fit.channels)
    x = exposure_matrix(codes, ages, lengths, n_channels, fit.half_life_days)
    z = fit.intercept + x @ np.array([fit.coefficients[c] for c in fit.channels]).reshape(n_channels)
    if fit.controls:
        names = [f"final:{c}" for c in fit.channels] + [f"return:{c}" for c in fit.channels]
        z = z + ending_controls(codes, lengths, n_channels) @ np.array([fit.controls.get(k, 0.0) for k in names])
    return _sigmoid(z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _newton(
    design: np.ndarray, y: np.ndarray, penalty: np.ndarray, start: np.ndarray, max_iterations: int
) -> tuple[np.ndarray, int, float]:
    """Maximise the penalised log-likelihood from ``start``, halving steps that would lower it."""

    def objective(beta: np.ndarray) -> tuple[np.ndarray, float]:
        z = design @ beta
        return z, float(y @ z - np.logaddexp(0.0, z).sum() - 0.5 * penalty @ beta**2)

    beta = start.copy()
    z, value = objective(beta)
    weighted = np.empty_like(design)
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported
        p = _sigmoid(z)
        gradient = design.T @ (y - p) - penalty * beta
        hessian = np.multiply(design, (p * (1.0 - p))[:, None], out=weighted).T @ design
        hessian[np.diag_indices_from(hessian)] += penalty + 1e-9
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while True:
            z_new, value_new = objective(beta + scale * step)
            if value_new >= value - 1e-9 * abs(value) or scale < 1e-3:
                break
            scale /= 2
        beta, z, value = beta + scale * step, z_new, value_new
        if np.max(np.abs(scale * step)) < 1e-8:
            break
    return beta, iterations, value


def _incremental_credit(z: np.ndarray, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per channel: the conversions its positive terms caused, ``P(z) - P(z - positive terms)``, split by term."""
    terms = np.clip(x * w, 0.0, None)
    total = terms.sum(axis=1)
    lift = _sigmoid(z) - _sigmoid(z - total)
    some = total > 0
    return (terms[some] * (lift[some] / total[some])[:, None]).sum(axis=0)
