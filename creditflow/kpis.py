"""KPI formulas and the increments that feed the KPI windows.

Every event that moves a KPI becomes one ``KpiDelta`` keyed by tenant x
channel x campaign: tracked impressions and clicks, ad-spend reports, and the
conversions and revenue that the tenant's KPI model credited to a channel.

>>> ratios(impressions=1000, clicks=50, conversions=5.0, cost=100.0, revenue=400.0)
(0.05, 0.1, 20.0, 4.0)
>>> ratios(impressions=0, clicks=0, conversions=0.0, cost=0.0, revenue=0.0)
(None, None, None, None)
"""

from __future__ import annotations

from dataclasses import dataclass

from mypy_extensions import mypyc_attr

from creditflow.events import Event, SourcePosition, fast_init, pickled_flat

KEY_SEP = "\x1f"
"""Separator of key parts; the decoder refuses control characters in ids, so it cannot collide."""


@fast_init
@pickled_flat(position=SourcePosition)
@mypyc_attr(native_class=False)  # pickled: snapshots, items between processes
@dataclass(frozen=True, slots=True)
class KpiDelta:
    """What one event adds to the window of its event time."""

    tenant_id: str
    channel: str
    campaign_id: str
    ts_ms: int
    position: SourcePosition
    """Where the contributing event came from (its partition drives the watermark)."""
    event_id: str = ""
    impressions: int = 0
    clicks: int = 0
    conversions: float = 0.0
    cost: float = 0.0
    revenue: float = 0.0
    events: int = 1
    """How much the delta raises its window's revision (``KpiRow.events``): 1 for an event; for a
    conversion's credit, what its scoring adds (``state.journeys``: the conversion's revision plus one the
    first time it reaches a window row, then the rise of its revision at each restatement)."""

    @property
    def key(self) -> str:
        return f"{self.tenant_id}{KEY_SEP}{self.channel}{KEY_SEP}{self.campaign_id}"

    @classmethod
    def conversion(
        cls,
        tenant_id: str,
        channel: str,
        campaign_id: str,
        ts_ms: int,
        credit: float,
        revenue: float,
        position: SourcePosition,
        events: int = 1,
    ) -> KpiDelta:
        return cls(tenant_id, channel, campaign_id, ts_ms, position, conversions=credit, revenue=revenue, events=events)


def delta_of(event: Event, volume_source: str) -> KpiDelta | None:
    """The KPI increment of a validated event, or None when it moves no KPI.

    ``volume_source`` decides whether impressions/clicks are counted from
    tracked events ("events") or from ad-spend reports ("ad_spend"); cost
    always comes from ad-spend reports. Conversions are not counted here: the
    journeys step credits them to channels first.
    """
    et = event.event_type
    impressions = clicks = 0
    cost = 0.0
    if et == "ad_spend":
        m = event.metrics
        assert m is not None, "the decoder guarantees ad_spend events carry metrics"
        cost = m.cost
        if volume_source == "ad_spend":
            impressions, clicks = m.impressions, m.clicks
    elif volume_source == "events" and et in ("impression", "click"):
        impressions, clicks = (1, 0) if et == "impression" else (0, 1)
    else:
        return None
    return KpiDelta(
        event.tenant_id,
        event.channel,
        event.campaign_id,
        event.ts_ms,
        event.position,
        event.event_id,
        impressions=impressions,
        clicks=clicks,
        cost=cost,
    )


def ratios(
    impressions: int, clicks: int, conversions: float, cost: float, revenue: float
) -> tuple[float | None, float | None, float | None, float | None]:
    """(CTR, CVR, CPA, ROAS); None where the denominator is zero.

    CTR = clicks / impressions, CVR = conversions / clicks,
    CPA = cost / conversions, ROAS = revenue / cost.
    """
    ctr = clicks / impressions if impressions else None
    cvr = conversions / clicks if clicks else None
    cpa = cost / conversions if conversions else None
    roas = revenue / cost if cost else None
    return ctr, cvr, cpa, roas
