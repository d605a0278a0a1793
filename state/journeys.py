"""Per-person touchpoint journeys: the recoverable state behind every credit row.

One ``JourneyLogic`` lives per (tenant, person) key. It keeps the person's
touches in event-time order, and at each conversion scores every configured
attribution model, emits the credit rows, the conversion row and the KPI
delta of the tenant's KPI model, then consumes the credited touches.

Bounds (every piece of this state ends):

- touches older than the longest lookback (relative to the person's newest
  event) are pruned on every event; at most ``TenantConfig.max_touches``
  touches are kept (the oldest go first);
- at most ``MAX_SEEN_CONVERSIONS`` conversion ids are remembered for
  de-duplication, and none older than the idle TTL; the last
  ``RECENT_TOUCH_IDS`` touch event ids as 8-byte digests (128 bytes);
- the whole state is discarded once the person has been idle for
  ``TenantConfig.idle_ttl_days`` of wall time (``notify_at``) or when an event
  arrives more than that much event time after the previous one.

The state is a small dataclass of tuples; ``snapshot()`` returns a copy.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bytewax.operators import StatefulBatchLogic

from creditflow import attribution
from creditflow.config import TenantConfig, TenantConfigs
from creditflow.events import (
    EMPTY_UTM,
    UNATTRIBUTED_CHANNEL,
    ConversionRow,
    CreditRow,
    DeadLetter,
    PersonEvent,
    SourcePosition,
    Utm,
)
from creditflow.kpis import KpiDelta, delta_of
from creditflow.weights import WeightsProvider
from state.conversion_dedup import duplicate_conversion, duplicate_event

STATE_LAYOUT_VERSION = 2
"""Bump when ``JourneyState`` changes shape; snapshots of another layout are refused."""

MAX_SEEN_CONVERSIONS = 32
"""Conversion ids remembered per person to refuse crediting one twice."""

RECENT_TOUCH_IDS = 16
"""Touch event ids remembered per person (as 8-byte digests) to refuse a touch delivered twice."""
_DIGEST = 8

Touch = tuple[int, str, str, str, str]
"""(ts_ms, event_type, channel, campaign_id, event_id), kept sorted by ts_ms."""

INTERNAL_CHANNEL = "(internal)"
"""Channel the flow gives to page views whose referrer is the tenant's own site."""


@dataclass(frozen=True, slots=True)
class ScoredConversion:
    """Everything one conversion produced: its row, every model's credit rows and its KPI deltas.

    It travels as one item so that the cross-person de-duplication step
    (``state.conversion_dedup``) keeps or drops a conversion whole.
    """

    person_id: str
    event_id: str
    conversion: ConversionRow
    credits: tuple[CreditRow, ...]
    kpi_deltas: tuple[KpiDelta, ...]
    position: SourcePosition

    def rows(self) -> list[CreditRow | ConversionRow | KpiDelta]:
        return [*self.credits, self.conversion, *self.kpi_deltas]


JourneyOutput = ScoredConversion | KpiDelta | DeadLetter


@dataclass(slots=True)
class JourneyState:
    """What is remembered of one person between events."""

    touches: list[Touch] = field(default_factory=list)
    consumed_until_ms: int = -1
    """Touches at or before this event time were consumed by a conversion."""
    last_event_ms: int = -1
    """Event time of the person's newest event."""
    last_seen_wall_s: float = 0.0
    """Wall time (epoch seconds) of the last event processed, for the idle TTL."""
    first_utm: tuple[int, Utm] | None = None
    last_utm: tuple[int, Utm] | None = None
    seen_conversions: list[tuple[str, int]] = field(default_factory=list)
    """(conversion_id, conversion_ts_ms) of recent conversions, newest last."""
    recent_touch_ids: bytes = b""
    """Packed 8-byte blake2b digests of the person's last ``RECENT_TOUCH_IDS`` touch event ids."""
    layout: int = STATE_LAYOUT_VERSION

    def copy(self) -> JourneyState:
        return JourneyState(
            touches=list(self.touches),
            consumed_until_ms=self.consumed_until_ms,
            last_event_ms=self.last_event_ms,
            last_seen_wall_s=self.last_seen_wall_s,
            first_utm=self.first_utm,
            last_utm=self.last_utm,
            seen_conversions=list(self.seen_conversions),
            recent_touch_ids=self.recent_touch_ids,
            layout=self.layout,
        )


class JourneyLogic(StatefulBatchLogic[PersonEvent, JourneyOutput, JourneyState]):
    """Bytewax stateful batch logic for one (tenant, person) key.

    Items are applied in arrival order: a person's events reach this step on
    one path from one source partition, so that order is the partition's
    order, the same in a replay after a crash (batch boundaries may differ,
    the result may not). Touches arriving out of event-time order are still
    inserted in place. ``now`` returns the wall clock as epoch seconds.
    """

    def __init__(
        self,
        configs: TenantConfigs,
        weights: WeightsProvider,
        resume: JourneyState | None,
        now: Callable[[], float],
    ) -> None:
        self._configs = configs
        self._weights = weights
        self._now = now
        self.state = resume if resume is not None else JourneyState()
        self._cfg: TenantConfig | None = None

    # -- bytewax hooks -------------------------------------------------
    def on_batch(self, values: list[PersonEvent]) -> tuple[Iterable[JourneyOutput], bool]:
        out: list[JourneyOutput] = []
        for value in values:
            out.extend(self.on_item(value)[0])
        return out, False

    def on_item(self, value: PersonEvent) -> tuple[Iterable[JourneyOutput], bool]:
        """Apply one event (also used directly by tests and tools)."""
        ev = value.event
        cfg = self._cfg = self._configs.for_tenant(ev.tenant_id)
        st = self.state
        if st.last_event_ms >= 0 and ev.ts_ms - st.last_event_ms > cfg.idle_ttl_ms:
            st = self.state = JourneyState()
        st.last_seen_wall_s = self._now()
        if ev.ts_ms > st.last_event_ms:
            st.last_event_ms = ev.ts_ms
        out: list[JourneyOutput] = []
        if ev.is_touch:
            if self._seen_touch(ev.event_id):
                out.append(duplicate_event(ev))
                return out, False
            self._add_touch(value, cfg)
            delta = delta_of(ev, cfg.kpi_volume_source)
            if delta is not None:
                out.append(delta)
        elif ev.event_type == "conversion":
            self._convert(value, cfg, out)
        self._prune(cfg)
        return out, False

    def on_notify(self) -> tuple[Iterable[JourneyOutput], bool]:
        return (), True  # idle TTL reached: forget the person

    def on_eof(self) -> tuple[Iterable[JourneyOutput], bool]:
        return (), False

    def notify_at(self) -> datetime | None:
        ttl_s = (self._cfg.idle_ttl_ms if self._cfg else TenantConfig().idle_ttl_ms) / 1000.0
        return datetime.fromtimestamp(self.state.last_seen_wall_s, tz=UTC) + timedelta(seconds=ttl_s)

    def snapshot(self) -> JourneyState:
        return self.state.copy()

    # -- journey maintenance ---------------------------------------------
    def _seen_touch(self, event_id: str) -> bool:
        """True if this touch event id came before (within the last ``RECENT_TOUCH_IDS``); else remember it."""
        st = self.state
        digest = hashlib.blake2b(event_id.encode(), digest_size=_DIGEST).digest()
        recent = st.recent_touch_ids
        for i in range(0, len(recent), _DIGEST):
            if recent[i : i + _DIGEST] == digest:
                return True
        st.recent_touch_ids = (recent + digest)[-RECENT_TOUCH_IDS * _DIGEST :]
        return False

    def _add_touch(self, pe: PersonEvent, cfg: TenantConfig) -> None:
        ev = pe.event
        st = self.state
        if not ev.utm.is_empty():
            if st.first_utm is None or ev.ts_ms < st.first_utm[0]:
                st.first_utm = (ev.ts_ms, ev.utm)
            if st.last_utm is None or ev.ts_ms >= st.last_utm[0]:
                st.last_utm = (ev.ts_ms, ev.utm)
        if not is_touchpoint(pe, cfg) or ev.ts_ms <= st.consumed_until_ms:
            return  # counted in KPIs, never credit: not a touchpoint, or its time was already credited
        bisect.insort(st.touches, (ev.ts_ms, ev.event_type, ev.channel, ev.campaign_id, ev.event_id))
        if len(st.touches) > cfg.max_touches:
            del st.touches[: len(st.touches) - cfg.max_touches]

    def _prune(self, cfg: TenantConfig) -> None:
        st = self.state
        horizon = st.last_event_ms - max(cfg.lookback_ms("click"), cfg.lookback_ms("impression"))
        if st.touches and st.touches[0][0] < horizon:
            st.touches = [t for t in st.touches if t[0] >= horizon]
        if st.seen_conversions:
            keep_after = st.last_event_ms - cfg.idle_ttl_ms
            st.seen_conversions = [c for c in st.seen_conversions if c[1] >= keep_after][-MAX_SEEN_CONVERSIONS:]

    def _convert(self, pe: PersonEvent, cfg: TenantConfig, out: list[JourneyOutput]) -> None:
        ev = pe.event
        conv = ev.conversion
        assert conv is not None, "the decoder guarantees conversion events carry a conversion"
        st = self.state
        first = next((c for c in st.seen_conversions if c[0] == conv.conversion_id), None)
        if first is not None:  # already credited for this person: a retry; touches stay for later conversions
            out.append(duplicate_conversion(ev, f"this person's conversion at event time {first[1]} ms"))
            return
        st.seen_conversions.append((conv.conversion_id, ev.ts_ms))
        eligible = eligible_touches(st.touches, ev.ts_ms, st.consumed_until_ms, cfg)
        version, channel_weights = self._weights.current(ev.tenant_id)
        rows = credit_rows(pe, eligible, cfg, version, channel_weights)
        deltas = tuple(
            KpiDelta.conversion(
                ev.tenant_id, r.channel, r.campaign_id, ev.ts_ms, r.credit, r.revenue_credit, ev.position
            )
            for r in rows
            if r.model == cfg.kpi_model and r.credit > 0
        )
        out.append(
            ScoredConversion(
                pe.person_id, ev.event_id, conversion_row(pe, eligible, st), tuple(rows), deltas, ev.position
            )
        )
        # Consume: a later conversion credits only later touches.
        st.touches = [t for t in st.touches if t[0] > ev.ts_ms]
        st.consumed_until_ms = max(st.consumed_until_ms, ev.ts_ms)


def is_touchpoint(pe: PersonEvent, cfg: TenantConfig) -> bool:
    """Whether a touch event may earn credit at all under this tenant's rules.

    Impressions only with view-through; page views that are internal navigation
    (the channel step marks them with the ``internal`` channel) never.
    """
    ev = pe.event
    if ev.event_type == "impression":
        return cfg.view_through
    return not (ev.event_type == "page_view" and ev.channel == INTERNAL_CHANNEL)


def eligible_touches(
    touches: list[Touch], conversion_ts_ms: int, consumed_until_ms: int, cfg: TenantConfig
) -> list[Touch]:
    """Touches that may be credited for a conversion at ``conversion_ts_ms``.

    >>> cfg = TenantConfig()
    >>> ts = [(0, "click", "email", "c", "a"), (10, "click", "email", "c", "b"), (99, "click", "email", "c", "z")]
    >>> [t[4] for t in eligible_touches(ts, 50, 0, cfg)]
    ['b']
    """
    return [
        t
        for t in touches
        if consumed_until_ms < t[0] <= conversion_ts_ms and conversion_ts_ms - t[0] <= cfg.lookback_ms(t[1])
    ]


def credit_rows(
    pe: PersonEvent,
    eligible: list[Touch],
    cfg: TenantConfig,
    weights_version: int,
    channel_weights: dict[str, float] | None,
) -> list[CreditRow]:
    """Credit rows of every configured model for one conversion.

    A conversion without an eligible touch gets one ``(unattributed)`` row per
    model holding the whole credit and value, so per-conversion sums stay 1.
    """
    ev = pe.event
    conv = ev.conversion
    assert conv is not None
    # No eligible touch: one pseudo-touch of the unattributed channel takes it all.
    touches = eligible or [(ev.ts_ms, "", UNATTRIBUTED_CHANNEL, "", "")]
    ts = [t[0] for t in touches]
    channels = [t[2] for t in touches]
    rows: list[CreditRow] = []
    for model in cfg.models:
        shares = attribution.score(model, ts, channels, ev.ts_ms, cfg, channel_weights) if eligible else [1.0]
        revenue = attribution.split_revenue(shares, conv.value)
        version = weights_version if model == "data_driven" else 0
        for t, share, rev in zip(touches, shares, revenue, strict=True):
            rows.append(
                CreditRow(
                    tenant_id=ev.tenant_id,
                    conversion_id=conv.conversion_id,
                    person_id=pe.person_id,
                    model=model,
                    model_version=version,
                    channel=t[2],
                    campaign_id=t[3],
                    touch_event_id=t[4],
                    touch_ts_ms=t[0],
                    conversion_ts_ms=ev.ts_ms,
                    credit=share,
                    revenue_credit=rev,
                )
            )
    return rows


def _utm_at(st: JourneyState, ts_ms: int) -> Utm:
    """The newest UTMs known at ``ts_ms`` (an out-of-order later touch does not count)."""
    for known in (st.last_utm, st.first_utm):
        if known is not None and known[0] <= ts_ms:
            return known[1]
    return EMPTY_UTM


def conversion_row(pe: PersonEvent, eligible: list[Touch], st: JourneyState) -> ConversionRow:
    ev = pe.event
    conv = ev.conversion
    assert conv is not None
    return ConversionRow(
        tenant_id=ev.tenant_id,
        conversion_id=conv.conversion_id,
        person_id=pe.person_id,
        event_id=ev.event_id,
        conversion_ts_ms=ev.ts_ms,
        value=conv.value,
        currency=conv.currency,
        conversion_type=conv.type,
        touch_count=len(eligible),
        attributed=bool(eligible),
        first_touch_channel=eligible[0][2] if eligible else "",
        last_touch_channel=eligible[-1][2] if eligible else "",
        first_utm=st.first_utm[1] if st.first_utm else EMPTY_UTM,
        last_utm=_utm_at(st, ev.ts_ms),
    )
