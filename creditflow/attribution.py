"""Pure attribution maths: how one conversion's credit is shared among its touches.

Every model takes a journey of ``n`` touches in event-time order (oldest first)
and returns ``n`` non-negative shares that sum to 1 (``[]`` for ``n == 0``).
No I/O and no Bytewax here: these run once per conversion in the streaming hot
path and again in Ray training jobs, so they work on plain lists of floats.

>>> linear(4)
[0.25, 0.25, 0.25, 0.25]
>>> split_revenue(first_touch(2), 100.0)
[100.0, 0.0]

Invalid arguments raise :class:`AttributionError`, which is a ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from creditflow.config import MODELS, TenantConfig
from creditflow.errors import CreditflowError
from creditflow.weights import UNTRAINED, ScoringWeights

__all__ = [
    "AttributionError",
    "data_driven",
    "first_touch",
    "last_touch",
    "linear",
    "position_based",
    "score",
    "split_revenue",
    "time_decay",
]

_CREDIT_SUM_TOLERANCE = 1e-9


class AttributionError(CreditflowError, ValueError):
    """An attribution function got arguments it cannot score."""


def _check_n(n: int) -> None:
    if n < 0:
        raise AttributionError(f"number of touches must be >= 0 (got {n})")


def first_touch(n: int) -> list[float]:
    """All credit to the first (oldest) of ``n`` touches.

    >>> first_touch(3)
    [1.0, 0.0, 0.0]
    >>> first_touch(0)
    []
    """
    _check_n(n)
    shares = [0.0] * n
    if n:
        shares[0] = 1.0
    return shares


def last_touch(n: int) -> list[float]:
    """All credit to the last (most recent) of ``n`` touches.

    >>> last_touch(3)
    [0.0, 0.0, 1.0]
    """
    _check_n(n)
    shares = [0.0] * n
    if n:
        shares[-1] = 1.0
    return shares


def linear(n: int) -> list[float]:
    """Equal credit to each of ``n`` touches.

    >>> linear(2)
    [0.5, 0.5]
    """
    _check_n(n)
    return [1.0 / n] * n if n else []


def time_decay(touch_ts_ms: Sequence[int], conversion_ts_ms: int, half_life_ms: float) -> list[float]:
    """Credit halving every ``half_life_ms`` of touch age, normalized to sum 1.

    Age is ``conversion_ts_ms - touch_ts_ms``, clipped at 0 (a touch stamped after
    the conversion counts as age 0). Weights are taken relative to the youngest
    touch, so very old journeys with a short half-life never underflow to all zero.

    >>> day = 86_400_000
    >>> time_decay([0, 7 * day, 14 * day], 14 * day, 7 * day) == [1 / 7, 2 / 7, 4 / 7]
    True
    >>> time_decay([0, 3_600_000], 10 * 365 * day, 3_600_000)  # years old, 1 h half-life
    [0.3333333333333333, 0.6666666666666666]
    """
    if not half_life_ms > 0:  # also rejects NaN
        raise AttributionError(f"half_life_ms must be > 0 (got {half_life_ms})")
    if not touch_ts_ms:
        return []
    ages = [conversion_ts_ms - ts for ts in touch_ts_ms]
    min_age = max(0, min(ages))
    exp2 = math.exp2
    # Exponents are <= 0, so every weight is in [0, 1] and the youngest touch gets exactly 1.0.
    weights = [exp2((min_age - age) / half_life_ms) if age > min_age else 1.0 for age in ages]
    total = math.fsum(weights)
    return [w / total for w in weights]


def position_based(n: int, first: float = 0.4, last: float = 0.4) -> list[float]:
    """``first`` to the first touch, ``last`` to the last, the rest split over the middle.

    With one touch it gets everything; with two, ``first`` and ``last`` are rescaled
    to sum 1 (50/50 if both are 0).

    >>> position_based(1)
    [1.0]
    >>> position_based(2, 0.5, 0.25)  # rescaled to 2:1
    [0.6666666666666666, 0.3333333333333333]
    >>> position_based(4, 0.3, 0.5)
    [0.3, 0.1, 0.1, 0.5]
    """
    _check_n(n)
    if not (0.0 <= first <= 1.0 and 0.0 <= last <= 1.0 and first + last <= 1.0):
        raise AttributionError(f"position shares must be >= 0 and sum to at most 1 (got first={first}, last={last})")
    if n <= 1:
        return [1.0] * n
    if n == 2:
        ends = first + last
        if ends == 0.0:
            return [0.5, 0.5]
        return [first / ends, last / ends]
    shares = [max(0.0, math.fsum((1.0, -first, -last))) / (n - 2)] * n
    shares[0] = first
    shares[-1] = last
    return shares


def data_driven(
    channels: Sequence[str],
    channel_weights: Mapping[str, float],
    touch_ts_ms: Sequence[int] | None = None,
    conversion_ts_ms: int = 0,
    half_life_days: float | None = None,
    per_channel: bool = False,
) -> list[float]:
    """Credit of each touch from its channel's trained weight (missing channel: 0).

    How position and recency enter: position does not, only the channel and
    the touch's age. A touch's raw weight is ``channel_weights[channel]``,
    times ``0.5 ** (age_days / half_life_days)`` when the model learnt a
    recency half-life (``age`` = conversion time - touch time, needs
    ``touch_ts_ms``), divided by the number of the path's touches on that
    channel when ``per_channel`` (weights of channel *sets*, e.g. Markov
    removal effects or Shapley values, are shared by a channel's touches;
    per-exposure weights, e.g. logistic lift, are not). Shares are the raw
    weights normalised. Falls back to :func:`linear` when every raw weight is 0.
    Only the journey's channels are looked at (and validated): a negative or
    non-finite weight raises :class:`AttributionError` naming the channel.

    >>> data_driven(["search", "email", "search"], {"search": 3.0, "email": 2.0})
    [0.375, 0.25, 0.375]
    >>> data_driven(["search", "email", "search"], {"search": 3.0, "email": 2.0}, per_channel=True)
    [0.3, 0.4, 0.3]
    >>> data_driven(["a", "a"], {"a": 1.0}, [0, 86_400_000], 86_400_000, half_life_days=1.0)
    [0.3333333333333333, 0.6666666666666666]
    >>> data_driven(["social", "email"], {"search": 1.0})  # no known channel: linear
    [0.5, 0.5]
    """
    if not channels:
        return []
    get = channel_weights.get
    weights = [float(get(channel, 0.0)) for channel in channels]
    for channel, w in zip(channels, weights, strict=True):
        if not (0.0 <= w < math.inf):  # also rejects NaN
            raise AttributionError(f"weight of channel {channel!r} must be finite and >= 0 (got {w})")
    if half_life_days is not None:
        if touch_ts_ms is None or len(touch_ts_ms) != len(channels):
            raise AttributionError("recency weighting needs one touch time per channel")
        if not (half_life_days > 0 and math.isfinite(half_life_days)):
            raise AttributionError(f"half_life_days must be finite and > 0 (got {half_life_days})")
        scale = _DAY_MS * half_life_days
        weights = [
            w * 0.5 ** (max(conversion_ts_ms - ts, 0) / scale) for w, ts in zip(weights, touch_ts_ms, strict=True)
        ]
    if per_channel:
        counts: dict[str, int] = {}
        for channel in channels:
            counts[channel] = counts.get(channel, 0) + 1
        weights = [w / counts[channel] for w, channel in zip(weights, channels, strict=True)]
    top = max(weights)
    if top == 0.0:
        return linear(len(channels))
    # Scale by the largest weight first so that huge weights cannot overflow the total.
    scaled = [w / top for w in weights]
    total = math.fsum(scaled)
    return [w / total for w in scaled]


_DAY_MS = 86_400_000


_Scorer = Callable[[Sequence[int], Sequence[str], int, TenantConfig, ScoringWeights], list[float]]

_SCORERS: dict[str, _Scorer] = {
    "first_touch": lambda ts, ch, conv, cfg, cw: first_touch(len(ts)),
    "last_touch": lambda ts, ch, conv, cfg, cw: last_touch(len(ts)),
    "linear": lambda ts, ch, conv, cfg, cw: linear(len(ts)),
    "time_decay": lambda ts, ch, conv, cfg, cw: time_decay(ts, conv, cfg.half_life_ms),
    "position_based": lambda ts, ch, conv, cfg, cw: position_based(len(ts), cfg.position_first, cfg.position_last),
    "data_driven": lambda ts, ch, conv, cfg, w: data_driven(
        ch, w.channel_weights, ts, conv, w.half_life_days, w.split == "per_channel"
    ),
}
assert set(_SCORERS) == set(MODELS), "every model in creditflow.config.MODELS needs a scorer"


def score(
    model: str,
    touch_ts_ms: Sequence[int],
    channels: Sequence[str],
    conversion_ts_ms: int,
    cfg: TenantConfig,
    weights: ScoringWeights | Mapping[str, float] | None = None,
) -> list[float]:
    """Shares of one journey under the named model, with the tenant's settings.

    ``touch_ts_ms`` and ``channels`` describe the same touches (equal lengths).
    ``weights`` (the tenant's trained ``ScoringWeights``, or bare channel
    weights) is used by ``data_driven`` only; ``None`` means no trained weights
    yet, so ``data_driven`` falls back to linear.

    >>> from creditflow.config import TenantConfig
    >>> score("position_based", [1, 2, 3], ["a", "b", "c"], 10, TenantConfig())
    [0.4, 0.19999999999999996, 0.4]
    >>> score("data_driven", [1, 2], ["a", "b"], 10, TenantConfig(), {"a": 1.0, "b": 3.0})
    [0.25, 0.75]
    """
    scorer = _SCORERS.get(model)
    if scorer is None:
        raise AttributionError(f"unknown attribution model {model!r}; choose from {list(MODELS)}")
    if len(touch_ts_ms) != len(channels):
        raise AttributionError(
            f"touch_ts_ms and channels must describe the same touches (got {len(touch_ts_ms)} and {len(channels)})"
        )
    if weights is None:
        weights = UNTRAINED
    elif not isinstance(weights, ScoringWeights):
        weights = ScoringWeights(0, weights)
    return scorer(touch_ts_ms, channels, conversion_ts_ms, cfg, weights)


def split_revenue(credits: Sequence[float], value: float) -> list[float]:  # noqa: A002 (public name)
    """Revenue credit per touch, ``value * credit``, summing to ``value``.

    The rounding residue goes to the touch with the largest share (the first such
    touch on ties). ``credits`` must sum to 1 (within 1e-9); ``[]`` gives ``[]``.

    >>> split_revenue([0.5, 0.25, 0.25], 10.0)
    [5.0, 2.5, 2.5]
    >>> sum(split_revenue(linear(3), 100.0)) == 100.0
    True
    """
    if not math.isfinite(value):
        raise AttributionError(f"conversion value must be finite (got {value})")
    if not credits:
        return []
    if abs(math.fsum(credits) - 1.0) > _CREDIT_SUM_TOLERANCE:
        raise AttributionError(f"credits must sum to 1 (got {math.fsum(credits)!r} over {len(credits)} touches)")
    revenue = [value * c for c in credits]
    residue = value - math.fsum(revenue)
    if residue:
        top = max(range(len(credits)), key=credits.__getitem__)
        revenue[top] += residue
    return revenue
