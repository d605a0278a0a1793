"""Train every data-driven method for one tenant, score each on held-out journeys, choose one.

``train_tenant`` holds out ``holdout_fraction`` of the journeys
(``jobs.holdout.split_by_index``, seeded), fits Markov removal effects, Shapley
values and the confounder-robust incrementality model (``fit_incrementality``)
on the rest, and scores each model's ``P(convert | journey)`` on the held-out
journeys (log loss, ROC AUC).

The ``chosen`` method is picked by held-out log loss, a proper scoring rule (it
rewards calibrated probabilities, not only a good ranking), with a one-standard-
error rule for ties: the first method in ``METHODS`` whose mean loss exceeds the
lowest by at most one standard error of the paired per-journey difference.
Smaller gaps are sampling noise, and the order then prefers the model whose
credit survives a confounder. Without held-out journeys, the first in
``METHODS``. Held-out fit says which model explains the outcomes best, not that
its credit is causal; that rests on each model's assumptions (see
``jobs.incrementality``).

Each result carries what the online scorer needs, applied by ``path_credit``:
a touch's weight is its channel's weight, times ``0.5 ** (age / half_life)``
when there is a half-life, divided by the touches of its channel in the path
when the split is ``per_channel``; credits are the weights normalised (an equal
split when all are 0). Everything runs on flat numpy arrays: one pass over the
journeys in Python, then vectorised counts and fits.

>>> journeys = [([("search", 1.0)], True), ([("display", 3.0)], False), ([("search", 2.0), ("email", 0.0)], True)]
>>> training = train_tenant(journeys * 20, seed=1)
>>> training.train_journeys, training.holdout_journeys, training.converting_journeys
(48, 12, 40)
>>> sorted(training.methods["markov"].channel_weights)
['display', 'email', 'search']
>>> training.chosen in METHODS
True
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from jobs import incrementality, markov, shapley
from jobs.holdout import log_losses, roc_auc, split_by_index

__all__ = ["METHODS", "SPLITS", "MethodResult", "TenantTraining", "choose", "path_credit", "train_tenant"]

METHODS = ("incrementality", "shapley", "markov")
"""The methods trained, in the order that breaks ties in held-out log loss."""

SPLITS = ("per_touch", "per_channel")
"""How a channel's weight reaches its touches: each carries it, or they share it equally."""

Touch = tuple[str, float]
"""(channel, age in days before the journey's end)."""


@dataclass(frozen=True)
class MethodResult:
    method: str
    """``"markov"``, ``"shapley"`` or ``"incrementality"``."""
    channel_weights: dict[str, float]
    """What the online scorer multiplies per touch (finite, >= 0; every training channel)."""
    half_life_days: float | None
    """A touch's weight is multiplied by ``0.5 ** (age_days / half_life_days)``; ``None``: no recency."""
    split: str
    """One of ``SPLITS``."""
    shares: dict[str, float]
    """Aggregate credit shares on the training journeys (sum to 1, or all 0 without lift)."""
    metrics: dict[str, float]
    """At least ``log_loss`` and ``auc`` on the held-out journeys (``nan`` when undefined)."""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split {self.split!r} of {self.method}: use one of {', '.join(SPLITS)}")
        if self.half_life_days is not None and not 0.0 < self.half_life_days < math.inf:
            raise ValueError(f"half-life of {self.method} must be > 0 days or None (got {self.half_life_days})")
        for channel, w in self.channel_weights.items():
            if not 0.0 <= w < math.inf:  # also rejects NaN
                raise ValueError(f"weight of channel {channel!r} in {self.method} must be finite and >= 0 (got {w})")


@dataclass(frozen=True)
class TenantTraining:
    methods: dict[str, MethodResult]
    chosen: str
    """The method :func:`choose` picks from the held-out log losses."""
    train_journeys: int
    holdout_journeys: int
    converting_journeys: int
    """Converting journeys among all given (training and held out)."""


def train_tenant(
    journeys: Sequence[tuple[Sequence[Touch], bool]], seed: int = 0, holdout_fraction: float = 0.2
) -> TenantTraining:
    """Fit every method on ``(touches in order, converted)`` journeys; the same data and seed give the same result."""
    data = _Flat.from_journeys(journeys)
    held = split_by_index(len(data.lengths), holdout_fraction, seed)
    train, holdout = data.subset(~held).compact(), data.subset(held)
    results = [
        _incrementality(train, holdout),
        _shapley(train, holdout, seed),
        _markov(train, holdout),
    ]
    methods = {r.method: r for r, _ in results}
    return TenantTraining(
        methods,
        choose({r.method: losses for r, losses in results}),
        len(train.lengths),
        len(holdout.lengths),
        int(data.converted.sum()),
    )


def choose(losses: Mapping[str, np.ndarray]) -> str:
    """The method to use, from each method's per-journey held-out log losses (the one-standard-error rule).

    >>> choose({"incrementality": np.array([0.30, 0.52]), "shapley": np.array([0.31, 0.50]), "markov": np.zeros(2)})
    'markov'
    >>> choose({"incrementality": np.array([0.30, 0.52]), "shapley": np.array([0.31, 0.50]), "markov": np.ones(2)})
    'incrementality'
    """
    order = [m for m in METHODS if m in losses] + sorted(set(losses) - set(METHODS))
    if not order:
        raise ValueError("no method to choose from: give the held-out losses of at least one method")
    n = len(losses[order[0]])
    if not n:
        return order[0]
    best = min(order, key=lambda m: float(np.mean(losses[m])))
    for method in order:
        gap = losses[method] - losses[best]
        if gap.mean() <= (gap.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0):
            return method
    return best  # not reached: the best's own gap is 0


def path_credit(result: MethodResult, touches: Sequence[Touch]) -> list[float]:
    """Each touch's share of one conversion under ``result``, as the online scorer computes it.

    >>> decay = MethodResult("incrementality", {"search": 2.0, "email": 1.0}, 7.0, "per_touch", {}, {})
    >>> path_credit(decay, [("email", 7.0), ("search", 0.0)])  # 1 * 0.5 against 2 * 1
    [0.2, 0.8]
    >>> shared = MethodResult("markov", {"search": 0.8, "email": 0.2}, None, "per_channel", {}, {})
    >>> path_credit(shared, [("search", 3.0), ("email", 2.0), ("search", 0.0)])
    [0.4, 0.2, 0.4]
    >>> path_credit(shared, [("tv", 1.0), ("radio", 0.0)])  # no weight at all: equal split
    [0.5, 0.5]
    >>> path_credit(shared, [])
    []
    """
    if not touches:
        return []
    weights = [result.channel_weights.get(channel, 0.0) for channel, _ in touches]
    if result.half_life_days is not None:
        hl = result.half_life_days
        weights = [w * 0.5 ** (max(age, 0.0) / hl) for w, (_, age) in zip(weights, touches, strict=True)]
    if result.split == "per_channel":
        count = Counter(channel for channel, _ in touches)
        weights = [w / count[channel] for w, (channel, _) in zip(weights, touches, strict=True)]
    top = max(weights)
    if not top > 0.0:
        return [1.0 / len(touches)] * len(touches)
    scaled = [w / top for w in weights]  # the largest first, so that huge weights cannot overflow the total
    total = math.fsum(scaled)
    return [w / total for w in scaled]


@dataclass(frozen=True)
class _Flat:
    """Journeys as arrays: touches flattened in journey order, channels coded by index (-1: not in ``channels``)."""

    channels: tuple[str, ...]
    codes: np.ndarray
    ages: np.ndarray
    lengths: np.ndarray
    converted: np.ndarray

    @classmethod
    def from_journeys(cls, journeys: Sequence[tuple[Sequence[Touch], bool]]) -> _Flat:
        n = len(journeys)
        lengths = np.fromiter((len(touches) for touches, _ in journeys), dtype=np.int64, count=n)
        converted = np.fromiter((bool(conv) for _, conv in journeys), dtype=bool, count=n)
        names = [channel for touches, _ in journeys for channel, _ in touches]
        ages = np.fromiter((age for touches, _ in journeys for _, age in touches), dtype=float, count=len(names))
        if not np.isfinite(ages).all():
            bad = float(ages[~np.isfinite(ages)][0])
            raise ValueError(f"touch age {bad} is not a finite number of days: fix or drop the event's timestamp")
        channels = tuple(sorted(set(names)))
        index = {c: i for i, c in enumerate(channels)}
        codes = np.fromiter(map(index.__getitem__, names), dtype=np.int64, count=len(names))
        return cls(channels, codes, ages, lengths, converted)

    @property
    def journey(self) -> np.ndarray:
        """The journey of each touch."""
        return np.repeat(np.arange(len(self.lengths)), self.lengths)

    def subset(self, keep: np.ndarray) -> _Flat:
        """The journeys where ``keep`` is true, channels unchanged."""
        touch = keep[self.journey]
        return _Flat(self.channels, self.codes[touch], self.ages[touch], self.lengths[keep], self.converted[keep])

    def compact(self) -> _Flat:
        """The same journeys, coded over the channels they touch."""
        used = np.flatnonzero(np.bincount(self.codes[self.codes >= 0], minlength=len(self.channels)))
        return self.recoded(tuple(self.channels[i] for i in used))

    def recoded(self, channels: tuple[str, ...]) -> _Flat:
        """The same journeys, coded over ``channels`` (-1 for the others)."""
        index = {c: i for i, c in enumerate(channels)}
        lookup = np.array([index.get(c, -1) for c in self.channels] + [-1], dtype=np.int64)
        return _Flat(channels, lookup[self.codes], self.ages, self.lengths, self.converted)

    def last_codes(self) -> np.ndarray:
        """The last touch's code per journey, -2 for a journey without touches."""
        last = np.full(len(self.lengths), -2, dtype=np.int64)
        has = self.lengths > 0
        last[has] = self.codes[np.cumsum(self.lengths)[has] - 1]
        return last

    def channel_sets(self) -> tuple[np.ndarray, list[frozenset[str]]]:
        """Per journey, the id of its set of (known) channels, and the set of each id."""
        if len(self.channels) <= 62:
            bits = np.zeros(len(self.lengths), dtype=np.int64)
            known = self.codes >= 0
            np.bitwise_or.at(bits, self.journey[known], np.left_shift(np.int64(1), self.codes[known]))
            unique, ids = np.unique(bits, return_inverse=True)
            sets = [frozenset(c for i, c in enumerate(self.channels) if int(m) >> i & 1) for m in unique]
            return ids.reshape(-1), sets
        starts = np.concatenate([[0], np.cumsum(self.lengths)])
        keys = [
            frozenset(self.channels[c] for c in self.codes[a:b] if c >= 0)
            for a, b in zip(starts[:-1], starts[1:], strict=True)
        ]
        id_of: dict[frozenset[str], int] = {}
        ids_list = [id_of.setdefault(k, len(id_of)) for k in keys]
        return np.array(ids_list, dtype=np.int64), list(id_of)


def _result(
    method: str,
    weights: dict[str, float],
    half_life_days: float | None,
    split: str,
    shares: dict[str, float],
    predicted: np.ndarray,
    holdout: _Flat,
) -> tuple[MethodResult, np.ndarray]:
    """The method's result and its per-journey held-out log losses."""
    losses = log_losses(predicted, holdout.converted)
    metrics = {
        "log_loss": float(losses.mean()) if losses.size else math.nan,
        "auc": roc_auc(predicted, holdout.converted),
    }
    return MethodResult(method, weights, half_life_days, split, shares, metrics), losses


def _incrementality(train: _Flat, holdout: _Flat) -> tuple[MethodResult, np.ndarray]:
    fit = incrementality.fit_arrays(
        train.channels,
        train.codes,
        train.ages,
        train.lengths,
        train.converted,
        incrementality.HALF_LIVES,
        controls=True,
    )
    held = holdout.recoded(train.channels)
    predicted = incrementality.predict_arrays(fit, held.codes, held.ages, held.lengths)
    weights = {c: max(0.0, w) for c, w in fit.coefficients.items()}
    return _result("incrementality", weights, fit.half_life_days, "per_touch", fit.weights, predicted, held)


def _shapley(train: _Flat, holdout: _Flat, seed: int) -> tuple[MethodResult, np.ndarray]:
    ids, sets = train.channel_sets()
    journeys = np.bincount(ids, minlength=len(sets))
    conversions = np.bincount(ids, weights=train.converted, minlength=len(sets))
    bit = {c: 1 << i for i, c in enumerate(train.channels)}
    counts = {sum(bit[c] for c in s): (int(journeys[k]), int(conversions[k])) for k, s in enumerate(sets)}
    fit = shapley.fit_counts(train.channels, counts, seed=seed)
    held_ids, held_sets = holdout.channel_sets()
    predicted = shapley.predict(fit, held_sets)[held_ids]
    weights = {c: max(0.0, v) for c, v in fit.values.items()}
    return _result("shapley", weights, None, "per_channel", fit.weights, predicted, holdout)


def _markov(train: _Flat, holdout: _Flat) -> tuple[MethodResult, np.ndarray]:
    states = len(train.channels) + 1  # 0 is start
    state = train.codes + 1
    previous = np.zeros(len(state), dtype=np.int64)
    previous[1:] = state[:-1]
    starts = (np.cumsum(train.lengths) - train.lengths)[train.lengths > 0]
    previous[starts] = 0
    moves = np.bincount(previous * states + state, minlength=states * states).reshape(states, states)
    last = np.maximum(train.last_codes() + 1, 0)  # -2 (no touch) -> start
    ends = np.stack(
        [
            np.bincount(last, weights=train.converted, minlength=states),
            np.bincount(last, weights=~train.converted, minlength=states),
        ],
        axis=1,
    )
    fit = markov.fit_counts(train.channels, moves.astype(float), ends, len(train.lengths))
    held_last = holdout.last_codes()
    unique, ids = np.unique(held_last, return_inverse=True)
    paths = [(holdout.channels[c],) if c >= 0 else () for c in unique]
    predicted = markov.predict(fit, paths)[ids.reshape(-1)]
    return _result("markov", dict(fit.removal_effect), None, "per_channel", fit.weights, predicted, holdout)
