"""Per-tenant settings (data, not code) and the run settings of a flow.

Tenant settings come from a TOML or JSON file shaped like::

    [defaults]                 # applies to every tenant
    lookback_days = 30

    [tenants.acme]             # overrides for one tenant
    view_through = true
    half_life_days = 3
    [[tenants.acme.channel_rules]]
    channel = "partner"
    utm_source = "^partnerco$"

>>> cfg = TenantConfig(view_through=True)
>>> cfg.lookback_ms("impression") == 86_400_000
True
>>> TenantConfig(half_life_days=0)
Traceback (most recent call last):
...
creditflow.config.ConfigError: half_life_days must be > 0 (got 0); set a positive number of days
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from creditflow.errors import CreditflowError

DAY_MS = 86_400_000
MODELS: tuple[str, ...] = (
    "first_touch",
    "last_touch",
    "linear",
    "time_decay",
    "position_based",
    "data_driven",
)


class ConfigError(CreditflowError):
    """A configuration value is invalid; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True)
class ChannelRule:
    """A tenant's own channel rule, tried before the default channel grouping.

    Every given pattern (a regular expression, matched case-insensitively with
    ``re.search``) must match; ``click_id`` names a click id that must be present.
    """

    channel: str
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    referrer_host: str | None = None
    click_id: str | None = None


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """How one tenant's events are attributed and aggregated."""

    lookback_days: float = 30.0
    """Clicks and page views older than this at conversion time earn no credit."""
    impression_lookback_days: float = 1.0
    """Impressions older than this earn no credit (only with ``view_through``)."""
    view_through: bool = False
    """Whether impressions are touchpoints at all."""
    max_touches: int = 50
    """Cap on touches kept per person; the oldest are dropped first."""
    idle_ttl_days: float = 30.0
    """A person with no event for this long (event time or wall time) is forgotten."""
    training_close_days: float = 7.0
    """With the journey archive on, a person with no event for this long (wall time) has the journey
    archived as ``unconverted`` for training, and stays in state for attribution until ``idle_ttl_days``
    (so models learn from non-converting paths long before a journey expires)."""
    conversion_dedup_days: float = 30.0
    """A conversion_id seen again within this long is a duplicate and earns no credit."""
    half_life_days: float = 7.0
    """Time-decay half-life: weight = 2 ** (-age / half_life)."""
    position_first: float = 0.4
    position_last: float = 0.4
    """Position-based shares of the first and last touch; the middle shares the rest."""
    kpi_model: str = "last_touch"
    """Which model's credit assigns conversions and revenue to KPI windows."""
    kpi_volume_source: Literal["events", "ad_spend"] = "events"
    """Where KPI impressions/clicks come from: tracked events or ad-platform spend reports."""
    own_domains: tuple[str, ...] = ()
    """Referrer hosts that are the tenant's own site: such page views are not touches."""
    channel_rules: tuple[ChannelRule, ...] = ()
    models: tuple[str, ...] = MODELS
    """Models scored at each conversion."""
    consent_mode: Literal["opt_out", "opt_in"] = "opt_out"
    """``opt_out``: a person's events count until they withdraw ``consent_purpose``; ``opt_in``: nothing of
    a person is kept or credited until they grant it."""
    consent_purpose: str = "analytics"
    """The consent purpose attribution needs (a key of a consent event's ``consent`` map)."""
    identity_graph: bool = True
    """Link devices to users (deterministic and probabilistic links) so that a person's journey spans devices.

    Off, the person is the user id, else the device (no cross-device journeys, one keyed step fewer)."""
    identity_ttl_days: float = 90.0
    """A device's link to a user is forgotten after this long without an event from the device."""
    link_threshold: float = 0.7
    """Lowest confidence (0-1) at which a probabilistic link (IP + user agent + country) joins a device to a
    user; a deterministic link is never overridden by one."""
    link_window_minutes: float = 30.0
    """How close in time an anonymous device and an identified one must be seen on one network to be linked
    probabilistically; the matcher keeps (hashed) network observations no longer than this."""
    retention_days: float = math.inf
    """How long person-level rows are kept: ClickHouse credits, conversions, dead letters and suppressed-event
    counts (by event time; dead letters by arrival) and archived journeys (by close date). The default ``inf``
    keeps them until you choose (nothing is deleted by surprise, e.g. after a backfill of old events); 395
    (13 months) still allows year-over-year comparison. It must cover :attr:`state_horizon_days`, so that no
    flow state holds a person's data longer than the tenant keeps it (``creditflow.retention``)."""
    kpi_retention_days: float = math.inf
    """How long ``kpi_windows`` rows (aggregates: they name nobody) are kept, by window start; ``inf``: forever."""

    def __post_init__(self) -> None:
        for name in (
            "lookback_days",
            "impression_lookback_days",
            "idle_ttl_days",
            "training_close_days",
            "half_life_days",
            "conversion_dedup_days",
            "identity_ttl_days",
            "link_window_minutes",
            "retention_days",
            "kpi_retention_days",
        ):
            value = getattr(self, name)
            if not value > 0:
                unit = name.rsplit("_", 1)[-1]
                raise ConfigError(f"{name} must be > 0 (got {value}); set a positive number of {unit}")
        if self.max_touches < 1:
            raise ConfigError(f"max_touches must be >= 1 (got {self.max_touches})")
        if not (0 <= self.position_first and 0 <= self.position_last and self.position_first + self.position_last <= 1):
            raise ConfigError(
                "position_first and position_last must be >= 0 and sum to at most 1 "
                f"(got {self.position_first} and {self.position_last})"
            )
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise ConfigError(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
        if self.kpi_model not in MODELS:
            raise ConfigError(f"kpi_model {self.kpi_model!r} is not one of {list(MODELS)}")
        if self.kpi_model not in self.models:
            raise ConfigError(f"kpi_model {self.kpi_model!r} must also be listed in models")
        if self.consent_mode not in ("opt_out", "opt_in"):
            raise ConfigError(f"consent_mode must be 'opt_out' or 'opt_in' (got {self.consent_mode!r})")
        if not self.consent_purpose:
            raise ConfigError("consent_purpose must be a non-empty purpose name, e.g. 'analytics'")
        if not 0 < self.link_threshold <= 1:
            raise ConfigError(
                f"link_threshold must be in (0, 1] (got {self.link_threshold}); 1 links only the surest matches"
            )
        if self.kpi_volume_source not in ("events", "ad_spend"):
            raise ConfigError(f"kpi_volume_source must be 'events' or 'ad_spend' (got {self.kpi_volume_source!r})")
        horizon = self.state_horizon_days
        if self.retention_days < horizon:
            raise ConfigError(
                f"retention_days ({self.retention_days:g}) is shorter than flow state may keep a person's data "
                f"({horizon:g} days: {self._horizon_terms()}); raise retention_days to at least {horizon:g}, or "
                "lower those windows"
            )

    def lookback_ms(self, event_type: str) -> int:
        """Lookback window of a touch of this type, in milliseconds."""
        days = self.impression_lookback_days if event_type == "impression" else self.lookback_days
        return int(days * DAY_MS)

    @property
    def state_horizon_days(self) -> float:
        """The longest any keyed state keeps a datum of a person of this tenant, in days.

        A journey keeps touches up to twice the longest lookback before the person's newest event (an open
        conversion's window stays whole) and conversion ids up to ``idle_ttl_days`` before it, and is
        discarded ``idle_ttl_days`` after that event; a device link lives ``identity_ttl_days`` after the
        device's last event. Conversion de-duplication keeps no person id.

        >>> TenantConfig().state_horizon_days
        90.0
        """
        return max(self._journey_horizon_days(), self.identity_ttl_days)

    def _journey_horizon_days(self) -> float:
        return max(2 * max(self.lookback_days, self.impression_lookback_days), self.idle_ttl_days) + self.idle_ttl_days

    def _horizon_terms(self) -> str:
        return (
            f"journeys max(2 x longest lookback, idle_ttl_days) + idle_ttl_days = {self._journey_horizon_days():g}, "
            f"device links identity_ttl_days = {self.identity_ttl_days:g}"
        )

    @property
    def idle_ttl_ms(self) -> int:
        return int(self.idle_ttl_days * DAY_MS)

    @property
    def half_life_ms(self) -> float:
        return self.half_life_days * DAY_MS


@dataclass(frozen=True, slots=True)
class TenantConfigs:
    """Settings for every tenant: explicit overrides on top of shared defaults."""

    defaults: TenantConfig = field(default_factory=TenantConfig)
    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)

    def for_tenant(self, tenant_id: str) -> TenantConfig:
        return self.tenants.get(tenant_id, self.defaults)

    @classmethod
    def load(cls, path: str | Path) -> TenantConfigs:
        """Read a ``.toml`` or ``.json`` tenant config file."""
        p = Path(path)
        try:
            text = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read tenant config {p}: {exc}") from exc
        try:
            data = tomllib.loads(text.decode()) if p.suffix == ".toml" else json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"tenant config {p} is not valid {p.suffix.lstrip('.') or 'TOML/JSON'}: {exc}") from exc
        return cls.from_dict(data, origin=str(p))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "<dict>") -> TenantConfigs:
        unknown_top = set(data) - {"defaults", "tenants"}
        if unknown_top:
            raise ConfigError(f"{origin}: unknown section(s) {sorted(unknown_top)}; use [defaults] and [tenants.<id>]")
        defaults = _tenant_config(TenantConfig(), data.get("defaults", {}), f"{origin} [defaults]")
        tenants = {
            str(tid): _tenant_config(defaults, raw, f"{origin} [tenants.{tid}]")
            for tid, raw in data.get("tenants", {}).items()
        }
        return cls(defaults=defaults, tenants=tenants)


_FIELD_NAMES = {f.name for f in fields(TenantConfig)}


def _tenant_config(base: TenantConfig, raw: Mapping[str, Any], where: str) -> TenantConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table of settings")
    unknown = set(raw) - _FIELD_NAMES
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(_FIELD_NAMES)}")
    values: dict[str, Any] = dict(raw)
    if "channel_rules" in values:
        try:
            values["channel_rules"] = tuple(ChannelRule(**r) for r in values["channel_rules"])
        except TypeError as exc:
            raise ConfigError(f"{where}: bad channel rule: {exc}") from exc
    for name in ("own_domains", "models"):
        if name in values:
            values[name] = tuple(values[name])
    try:
        return replace(base, **values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
