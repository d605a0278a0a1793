"""Per-tenant retention: from which event time on each store keeps a tenant's rows.

Every tenant sets two retentions (``creditflow.config.TenantConfig``):
``retention_days`` for person-level data - ClickHouse credits, conversions,
dead letters, suppressed-event counts and archived journeys - and
``kpi_retention_days`` for the KPI window aggregates; ``inf`` keeps forever.
Flow state needs no sweep: every keyed step forgets a person within the
tenant's ``state_horizon_days``, which the config requires to fit in
``retention_days``. The stores outside the flow are expired by whoever writes
them: the ClickHouse sink (``sinks.clickhouse_retention``) and the archive
sink (``sinks.archive_retention``) expire at their first snapshot, then at
most once per ``retention_interval_s`` and when a finite run ends, and
``creditflow retention`` runs the same with the flow stopped.

This module only turns the settings into cutoffs, the earliest event time
(epoch ms) a store keeps for a tenant, at one moment:

>>> from creditflow.config import TenantConfig, TenantConfigs
>>> configs = TenantConfigs(TenantConfig(retention_days=395), {"acme": TenantConfig(retention_days=100)})
>>> cut = retention_cutoffs(configs, now_ms=400 * 86_400_000, kind="person")
>>> cut.of("acme") // 86_400_000, cut.of("anyone else") // 86_400_000
(300, 5)
>>> retention_cutoffs(configs, now_ms=400 * 86_400_000, kind="kpi").expires_nothing()
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from creditflow.config import DAY_MS, TenantConfig, TenantConfigs

__all__ = ["RETENTION_INTERVAL_S", "ExpirySchedule", "RetentionCutoffs", "RetentionKind", "retention_cutoffs"]

RetentionKind = Literal["person", "kpi"]
"""``person``: ``retention_days`` (rows that name or come from a person); ``kpi``: ``kpi_retention_days``."""

RETENTION_INTERVAL_S = 3600.0
"""How often a running sink expires rows by default: retention is in days, an hour late is nothing."""

NEVER = 0
"""The cutoff of a tenant that keeps rows forever: no event time is before the epoch."""


@dataclass(frozen=True, slots=True)
class RetentionCutoffs:
    """Per tenant, the earliest event time (epoch ms) kept; rows before it are past retention.

    ``default_ms`` applies to every tenant without settings of its own (the
    ``[defaults]`` of the config, and a tenant id no config names).
    """

    default_ms: int
    tenants: Mapping[str, int] = field(default_factory=dict)

    def of(self, tenant_id: str) -> int:
        return self.tenants.get(tenant_id, self.default_ms)

    def latest_ms(self) -> int:
        """The latest cutoff of any tenant: no row at or after it is past retention (a pruning bound)."""
        return max((self.default_ms, *self.tenants.values()))

    def expires_nothing(self) -> bool:
        """Whether every tenant keeps forever (then there is nothing to expire)."""
        return self.latest_ms() <= NEVER


def _cutoff(cfg: TenantConfig, now_ms: int, kind: RetentionKind) -> int:
    days = cfg.retention_days if kind == "person" else cfg.kpi_retention_days
    if math.isinf(days):
        return NEVER
    return max(NEVER, now_ms - int(days * DAY_MS))


def retention_cutoffs(configs: TenantConfigs, now_ms: int, kind: RetentionKind) -> RetentionCutoffs:
    """The cutoffs of every tenant at wall time ``now_ms`` (epoch ms) for one kind of data."""
    return RetentionCutoffs(
        default_ms=_cutoff(configs.defaults, now_ms, kind),
        tenants={tenant_id: _cutoff(cfg, now_ms, kind) for tenant_id, cfg in configs.tenants.items()},
    )


class ExpirySchedule:
    """When a running sink expires: at its first check, then at most once per ``interval_s``; ``force`` for close.

    ``now`` is any clock in seconds; one that steps back (a wall clock) makes the next check due.
    Bound: one number.

    >>> schedule = ExpirySchedule(3600.0)
    >>> schedule.due(100.0)
    True
    >>> schedule.ran(100.0); schedule.due(3699.0), schedule.due(3700.0), schedule.due(50.0)
    (False, True, True)
    >>> schedule.force(); schedule.due(101.0)
    True
    """

    __slots__ = ("interval_s", "_last")

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: float | None = None

    def due(self, now: float) -> bool:
        last = self._last
        return last is None or not 0 <= now - last < self.interval_s

    def ran(self, now: float) -> None:
        """Record an expiry that started at ``now``."""
        self._last = now

    def force(self) -> None:
        """Make the next check due (a finite run ends with nothing past retention)."""
        self._last = None
