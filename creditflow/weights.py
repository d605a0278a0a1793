"""Where the data-driven model gets its per-tenant weights.

The journeys step asks a ``WeightsProvider`` for the tenant's current
``ScoringWeights`` at every conversion (a dict lookup: it must be cheap).
Version 0 (``UNTRAINED``) means "no trained weights yet": the data-driven
model then falls back to linear credit and its rows carry ``model_version`` 0.
``creditflow.weights_store.RedisWeights`` follows the versions a retrain
publishes; the two here are fixed.

>>> NoWeights().current("acme").version
0
>>> StaticWeights({"acme": (3, {"email": 0.7, "display": 0.3})}).current("acme")
ScoringWeights(version=3, channel_weights={'email': 0.7, 'display': 0.3}, half_life_days=None, split='per_touch')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from creditflow.errors import CreditflowError

SPLITS = ("per_touch", "per_channel")
"""How a channel's weight reaches its touches (``creditflow.attribution.data_driven``)."""


@dataclass(frozen=True, slots=True)
class ScoringWeights:
    """What the online scorer needs of one version of a tenant's trained model."""

    version: int
    channel_weights: Mapping[str, float] = field(default_factory=dict)
    half_life_days: float | None = None
    """A touch's weight halves every this many days before the conversion (``None``: no recency)."""
    split: str = "per_touch"
    """``per_touch``: every touch carries its channel's weight; ``per_channel``: a channel's touches share it."""


UNTRAINED = ScoringWeights(0)
"""No trained weights: ``data_driven`` credits linearly, rows carry version 0."""


class WeightsProvider(Protocol):
    """Gives the tenant's current weights (``UNTRAINED`` if none)."""

    def current(self, tenant_id: str) -> ScoringWeights: ...


class NoWeights:
    """No trained weights anywhere: every tenant gets version 0."""

    def current(self, tenant_id: str) -> ScoringWeights:
        return UNTRAINED


class StaticWeights:
    """Fixed weights per tenant, e.g. loaded once from a file or set by a test."""

    def __init__(self, by_tenant: Mapping[str, ScoringWeights | tuple[int, Mapping[str, float]]]) -> None:
        self._by_tenant: dict[str, ScoringWeights] = {}
        for tenant, w in by_tenant.items():
            if not isinstance(w, ScoringWeights):
                w = ScoringWeights(w[0], dict(w[1]))
            check_scoring(tenant, w)
            self._by_tenant[tenant] = w

    def current(self, tenant_id: str) -> ScoringWeights:
        return self._by_tenant.get(tenant_id, UNTRAINED)


def check_scoring(tenant_id: str, w: ScoringWeights) -> None:
    """``check_weights`` plus the recency half-life and the split rule.

    >>> check_scoring("acme", ScoringWeights(2, {"a": 1.0}, split="per_person"))
    Traceback (most recent call last):
    ...
    creditflow.errors.CreditflowError: weights v2 of tenant 'acme': split 'per_person' is not one of ('per_touch', 'per_channel')
    """
    check_weights(tenant_id, w.version, w.channel_weights)
    hl = w.half_life_days
    if hl is not None and not (isinstance(hl, (int, float)) and math.isfinite(hl) and hl > 0):
        raise CreditflowError(
            f"weights v{w.version} of tenant {tenant_id!r}: half_life_days must be finite and > 0, or null (got {hl!r})"
        )
    if w.split not in SPLITS:
        raise CreditflowError(f"weights v{w.version} of tenant {tenant_id!r}: split {w.split!r} is not one of {SPLITS}")


def check_weights(tenant_id: str, version: int, weights: Mapping[str, float]) -> None:
    """Refuse weights the scorer cannot use, before they reach the stream.

    >>> check_weights("acme", 1, {"email": -1.0})
    Traceback (most recent call last):
    ...
    creditflow.errors.CreditflowError: weights v1 of tenant 'acme': channel 'email' has weight -1.0; weights must be finite and >= 0
    """
    if version < 1:
        raise CreditflowError(f"weights of tenant {tenant_id!r} need a version >= 1 (got {version}); 0 means untrained")
    for channel, w in weights.items():
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise CreditflowError(
                f"weights v{version} of tenant {tenant_id!r}: channel {channel!r} has weight {w!r}; "
                "weights must be finite and >= 0"
            )
