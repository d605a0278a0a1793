"""Where the data-driven model gets its per-tenant channel weights.

The journeys step asks a ``WeightsProvider`` for the current version of a
tenant's weights at every conversion. Version 0 means "no trained weights
yet": the data-driven model then falls back to linear credit and its rows
carry ``model_version`` 0.

>>> NoWeights().current("acme")
(0, {})
>>> StaticWeights({"acme": (3, {"email": 0.7, "display": 0.3})}).current("acme")
(3, {'email': 0.7, 'display': 0.3})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

from creditflow.errors import CreditflowError


class WeightsProvider(Protocol):
    """Gives the tenant's current (version, channel -> weight)."""

    def current(self, tenant_id: str) -> tuple[int, dict[str, float]]: ...


class NoWeights:
    """No trained weights anywhere: every tenant gets version 0."""

    def current(self, tenant_id: str) -> tuple[int, dict[str, float]]:
        return 0, {}


class StaticWeights:
    """Fixed weights per tenant, e.g. loaded once from a file or set by a test."""

    def __init__(self, by_tenant: Mapping[str, tuple[int, Mapping[str, float]]]) -> None:
        for tenant, (version, weights) in by_tenant.items():
            check_weights(tenant, version, weights)
        self._by_tenant = {t: (v, dict(w)) for t, (v, w) in by_tenant.items()}

    def current(self, tenant_id: str) -> tuple[int, dict[str, float]]:
        return self._by_tenant.get(tenant_id, (0, {}))


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
