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

Memory: between events a journey is a packed ``JourneyState``
(``state.journey_state``: one ``bytes`` plus one tuple of values shared across
persons), under 500 bytes per key with the key itself
(``loadtest/state_memory.py``). The logic unpacks it into a ``Journey`` for one
batch of events and packs it back at the end; ``snapshot()`` returns the
packed state as it is (immutable, nothing copied).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from bytewax.operators import StatefulBatchLogic

from creditflow import attribution
from creditflow.config import TenantConfig, TenantConfigs
from creditflow.consent import allows, decision_of, state_of
from creditflow.events import (
    EMPTY_UTM,
    UNATTRIBUTED_CHANNEL,
    ClosedJourney,
    ConversionRow,
    CreditRow,
    DeadLetter,
    Event,
    PersonEvent,
    SourcePosition,
    SuppressedEvent,
    Utm,
)
from creditflow.kpis import KpiDelta, delta_of
from creditflow.weights import UNTRAINED, ScoringWeights, WeightsProvider
from state.conversion_dedup import duplicate_conversion, duplicate_event
from state.journey_state import (
    CONSENT_UNKNOWN,
    CONSENT_WITHDRAWN,
    DIGEST_BYTES,
    STATE_LAYOUT_VERSION,
    Journey,
    JourneyState,
    Touch,
    intern_meta,
    intern_utm,
    pack_id,
    unpack_id,
    wall_s_of,
)

__all__ = [
    "Adopt",
    "INTERNAL_CHANNEL",
    "MAX_SEEN_CONVERSIONS",
    "ExpiredJourney",
    "RECENT_TOUCH_IDS",
    "STATE_LAYOUT_VERSION",
    "JourneyEnv",
    "JourneyLogic",
    "JourneyOutput",
    "JourneyState",
    "ScoredConversion",
    "TenantContext",
    "Touch",
    "conversion_row",
    "credit_rows",
    "eligible_touches",
    "is_touchpoint",
]

MAX_SEEN_CONVERSIONS = 32
"""Conversion ids remembered per person to refuse crediting one twice."""

RECENT_TOUCH_IDS = 16
"""Touch event ids remembered per person (as 8-byte digests) to refuse a touch delivered twice."""

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
    journey: ClosedJourney | None = None
    """The credited path for the archive (``None`` when the flow keeps no archive)."""

    def rows(self) -> list[CreditRow | ConversionRow | KpiDelta | ClosedJourney]:
        rows: list[CreditRow | ConversionRow | KpiDelta | ClosedJourney] = [
            *self.credits,
            self.conversion,
            *self.kpi_deltas,
        ]
        if self.journey is not None:
            rows.append(self.journey)
        return rows


@dataclass(frozen=True, slots=True)
class ExpiredJourney:
    """A journey closed by the wall-time idle TTL (``on_notify``), before its key is known.

    The logic does not hold its own (tenant, person) key; the operator turns
    this into a ``ClosedJourney`` with it (:func:`expired_journey`).
    """

    last_event_ms: int
    touch_channels: tuple[str, ...]
    touch_ts_ms: tuple[int, ...]
    outcome: str = "expired"
    """``expired`` (idle TTL: the person is forgotten) or ``unconverted`` (training close: kept)."""

    def closed(self, tenant_id: str, person_id: str) -> ClosedJourney:
        return expired_journey(
            tenant_id, person_id, self.last_event_ms, self.touch_channels, self.touch_ts_ms, self.outcome
        )


@dataclass(frozen=True, slots=True)
class Adopt:
    """A device's journey handed to the person it was just linked to (``state.device_graph``).

    The person's journey takes in the device's touches (those no conversion of the
    device consumed), its seen conversion ids and its consent, as if the person had
    made them: a later conversion of the person credits them.
    """

    tenant_id: str
    person_id: str
    """The person the device now belongs to (``u:<user_id>``)."""
    state: JourneyState


JourneyOutput = ScoredConversion | KpiDelta | DeadLetter | ClosedJourney | ExpiredJourney | SuppressedEvent


# --------------------------------------------------------------------------- #
# The logic
# --------------------------------------------------------------------------- #


class JourneyEnv:
    """What every journey of a flow shares: tenant settings, weights and the wall clock.

    One per flow (not per key): each ``JourneyLogic`` keeps one reference to its
    tenant's ``TenantContext``. ``now`` returns the wall clock as epoch seconds.
    """

    __slots__ = ("configs", "weights", "now", "archive", "default", "tenants")

    def __init__(
        self, configs: TenantConfigs, weights: WeightsProvider, now: Callable[[], float], archive: bool = False
    ) -> None:
        self.configs = configs
        self.weights = weights
        self.now = now
        self.archive = archive
        """Emit every closed journey (``ClosedJourney``, ``ExpiredJourney``) for the Parquet archive."""
        self.default = TenantContext(self, configs.defaults, "")
        """The context of every tenant without settings of its own."""
        self.tenants = {t: TenantContext(self, cfg, t) for t, cfg in configs.tenants.items()}


class TenantContext:
    """A tenant's settings, precomputed, shared by all its journeys."""

    __slots__ = ("env", "cfg", "tenant_id", "idle_ttl_ms", "idle_ttl_s", "training_close_s", "horizon_ms")

    def __init__(self, env: JourneyEnv, cfg: TenantConfig, tenant_id: str) -> None:
        self.env = env
        self.cfg = cfg
        self.tenant_id = tenant_id
        """The tenant with settings of its own, '' for the shared default context."""
        self.idle_ttl_ms = cfg.idle_ttl_ms
        self.idle_ttl_s = cfg.idle_ttl_ms / 1000.0
        self.training_close_s = cfg.training_close_days * 86_400.0 if env.archive else math.inf
        """When an idle journey is archived ``unconverted`` (archive on and before the idle TTL only)."""
        self.horizon_ms = max(cfg.lookback_ms("click"), cfg.lookback_ms("impression"))


class JourneyLogic:
    """Bytewax stateful batch logic for one (tenant, person) key.

    Items are applied in arrival order: a person's events reach this step on
    one path from one source partition, so that order is the partition's
    order, the same in a replay after a crash (batch boundaries may differ,
    the result may not). Touches arriving out of event-time order are still
    inserted in place.

    Bytewax keeps one of these per active person, so it is three slots (the
    tenant's context and the packed state): 56 bytes. It implements every
    method of ``StatefulBatchLogic`` and is registered as its virtual subclass
    (``StatefulBatchLogic.register`` below; Bytewax checks ``isinstance``): a
    real subclass would carry an instance ``__dict__`` (96 bytes), because
    ``StatefulBatchLogic`` declares no ``__slots__``.
    """

    __slots__ = ("_ctx", "_packed", "_refs")

    def __init__(self, env: JourneyEnv, resume: JourneyState | None) -> None:
        self._ctx = env.default
        if resume is None:
            self._packed, self._refs = b"", ()
        else:
            self._packed, self._refs = resume.packed, resume.refs

    @property
    def state(self) -> JourneyState:
        """The current state (as ``snapshot()``)."""
        return JourneyState(self._packed, self._refs)

    # -- bytewax hooks -------------------------------------------------
    def on_batch(self, values: list[PersonEvent | Adopt]) -> tuple[Iterable[JourneyOutput], bool]:
        out: list[JourneyOutput] = []
        j = Journey.unpack(self._packed, self._refs) if self._packed else Journey()
        for value in values:
            j = self._adopt(j, value) if isinstance(value, Adopt) else self._apply(j, value, out)
        if _holds_nothing(j):  # e.g. only suppressed events: nothing of the person is kept
            self._packed, self._refs = b"", ()
            return out, True
        self._packed, self._refs = j.pack()
        return out, False

    def on_item(self, value: PersonEvent) -> tuple[Iterable[JourneyOutput], bool]:
        """Apply one event (also used directly by tests and tools)."""
        return self.on_batch([value])

    def on_notify(self) -> tuple[Iterable[JourneyOutput], bool]:
        # Either the training close (archive the open path as `unconverted`, keep the person) or the
        # idle TTL (forget the person; the touches no conversion consumed close `expired`).
        ctx = self._ctx
        closing = ctx.training_close_s < ctx.idle_ttl_s and ctx.env.now() < wall_s_of(self._packed) + ctx.idle_ttl_s
        forget = not closing
        if ctx.env.archive and self._packed:
            j = Journey.unpack(self._packed, self._refs)
            if j.ts:
                outcome = "expired" if forget else "unconverted"
                closed = ExpiredJourney(j.last_event_ms, *_open_path(j), outcome)
                return (closed,), forget
        return (), forget

    def on_eof(self) -> tuple[Iterable[JourneyOutput], bool]:
        return (), False

    def notify_at(self) -> datetime | None:
        ctx = self._ctx
        last = wall_s_of(self._packed)
        due = last + ctx.idle_ttl_s
        close = last + ctx.training_close_s  # inf without the archive
        if close < due and ctx.env.now() < close:
            due = close
        return datetime.fromtimestamp(due, tz=UTC)

    def snapshot(self) -> JourneyState:
        return JourneyState(self._packed, self._refs)

    # -- journey maintenance ---------------------------------------------
    def _apply(self, j: Journey, pe: PersonEvent, out: list[JourneyOutput]) -> Journey:
        """Apply one event to ``j``; returns the journey to go on with (a new one after the idle TTL)."""
        ev = pe.event
        env = self._ctx.env
        ctx = self._ctx = env.tenants.get(ev.tenant_id, env.default)
        cfg = ctx.cfg
        ts_ms = ev.ts_ms
        j.last_seen_wall_s = env.now()
        decision = decision_of(ev, cfg.consent_purpose)
        if decision is not None and ts_ms >= j.consent_ts_ms:
            j.consent, j.consent_ts_ms = state_of(decision), ts_ms
            if not decision:
                j = _forget_activity(j)  # withdrawal drops everything the person did
        if not allows(j.consent, cfg.consent_mode):
            if ev.is_touch or ev.event_type == "conversion":
                out.append(suppressed(ev, "no_consent"))
            return j
        if j.last_event_ms >= 0 and ts_ms - j.last_event_ms > ctx.idle_ttl_ms:
            if env.archive and j.ts:
                out.append(expired_journey(ev.tenant_id, pe.person_id, j.last_event_ms, *_open_path(j)))
            j = _forget_activity(j)
        if ts_ms > j.last_event_ms:
            j.last_event_ms = ts_ms
        if ev.is_touch:
            if _seen_touch(j, ev.event_id):
                out.append(duplicate_event(ev))
                return j
            _add_touch(j, pe, cfg)
            delta = delta_of(ev, cfg.kpi_volume_source)
            if delta is not None:
                out.append(delta)
        elif ev.event_type == "conversion":
            self._convert(j, pe, cfg, out)
        _prune(j, ctx)
        return j

    def _adopt(self, j: Journey, adopt: Adopt) -> Journey:
        """Take in a linked device's journey (see ``Adopt``); the later consent decision of the two wins."""
        env = self._ctx.env
        ctx = self._ctx = env.tenants.get(adopt.tenant_id, env.default)
        cfg = ctx.cfg
        a = adopt.state.unpacked()
        if a.consent_ts_ms > j.consent_ts_ms:
            j.consent, j.consent_ts_ms = a.consent, a.consent_ts_ms
            if a.consent == CONSENT_WITHDRAWN:
                j = _forget_activity(j)
        if not allows(j.consent, cfg.consent_mode):
            return j
        j.last_event_ms = max(j.last_event_ms, a.last_event_ms)
        j.last_seen_wall_s = env.now()
        if a.first_utm is not None and (j.first_utm is None or a.first_utm[0] < j.first_utm[0]):
            j.first_utm = a.first_utm
        if a.last_utm is not None and (j.last_utm is None or a.last_utm[0] >= j.last_utm[0]):
            j.last_utm = a.last_utm
        for ts_ms, meta, packed_id in zip(a.ts, a.metas, a.ids(), strict=True):
            event_id = unpack_id(packed_id)
            if ts_ms > j.consumed_until_ms and not _seen_touch(j, event_id):
                j.insert(ts_ms, meta, event_id)
        _cap_touches(j, cfg)
        known_ids = {c[0] for c in j.seen_conversions}
        merged = j.seen_conversions + [c for c in a.seen_conversions if c[0] not in known_ids]
        j.seen_conversions = sorted(merged, key=lambda c: c[1])
        _prune(j, ctx)
        return j

    def _convert(self, j: Journey, pe: PersonEvent, cfg: TenantConfig, out: list[JourneyOutput]) -> None:
        ev = pe.event
        conv = ev.conversion
        assert conv is not None, "the decoder guarantees conversion events carry a conversion"
        cid = pack_id(conv.conversion_id)
        first = next((c for c in j.seen_conversions if c[0] == cid), None)
        if first is not None:  # already credited for this person: a retry; touches stay for later conversions
            out.append(duplicate_conversion(ev, f"this person's conversion at event time {first[1]} ms"))
            return
        j.seen_conversions.append((cid, ev.ts_ms))
        upto = bisect.bisect_right(j.ts, ev.ts_ms)  # touches after the conversion are neither eligible nor consumed
        eligible = eligible_touches(j.touches(upto), ev.ts_ms, j.consumed_until_ms, cfg) if upto else []
        rows = credit_rows(pe, eligible, cfg, self._ctx.env.weights.current(ev.tenant_id))
        deltas = tuple(
            KpiDelta.conversion(
                ev.tenant_id, r.channel, r.campaign_id, ev.ts_ms, r.credit, r.revenue_credit, ev.position
            )
            for r in rows
            if r.model == cfg.kpi_model and r.credit > 0
        )
        journey = None
        if self._ctx.env.archive:
            journey = ClosedJourney(
                tenant_id=ev.tenant_id,
                person_id=pe.person_id,
                journey_id=f"{pe.person_id}:converted:{conv.conversion_id}",
                outcome="converted",
                closed_at_ms=ev.ts_ms,
                conversion_id=conv.conversion_id,
                value=conv.value,
                touch_channels=tuple(t[2] for t in eligible),
                touch_ts_ms=tuple(t[0] for t in eligible),
            )
        out.append(
            ScoredConversion(
                pe.person_id, ev.event_id, conversion_row(pe, eligible, j), tuple(rows), deltas, ev.position, journey
            )
        )
        # Consume: a later conversion credits only later touches.
        j.drop_oldest(upto)
        j.consumed_until_ms = max(j.consumed_until_ms, ev.ts_ms)


StatefulBatchLogic.register(JourneyLogic)


def _forget_activity(j: Journey) -> Journey:
    """A fresh journey that keeps only the person's consent and last wall time (after a withdrawal, or the idle TTL)."""
    fresh = Journey()
    fresh.consent, fresh.consent_ts_ms = j.consent, j.consent_ts_ms
    fresh.last_seen_wall_s = j.last_seen_wall_s
    return fresh


def _holds_nothing(j: Journey) -> bool:
    """No touch or touch id, no conversion, no UTM, no consent decision: nothing worth a key in state."""
    return (
        not j.ts
        and not j.recent_touch_ids
        and not j.seen_conversions
        and j.first_utm is None
        and j.consent == CONSENT_UNKNOWN
    )


def suppressed(event: Event, reason: str) -> SuppressedEvent:
    """The count-only trace of a suppressed event (see ``SuppressedEvent``).

    >>> from creditflow.events import SourcePosition
    >>> ev = Event("e1", "t", "click", 5, SourcePosition("f", "0", "0"), user_id="u")
    >>> r = suppressed(ev, "no_consent"); (r.tenant_id, r.reason, r.event_type, len(r.event_key))
    ('t', 'no_consent', 'click', 32)
    """
    digest = hashlib.blake2b(event.event_id.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return SuppressedEvent(event.tenant_id, reason, event.event_type, digest, event.ts_ms)


def _open_path(j: Journey) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The channels and times of the touches no conversion consumed, for an unconverted archive row."""
    return tuple(m[1] for m in j.metas), tuple(j.ts)


def expired_journey(
    tenant_id: str,
    person_id: str,
    last_event_ms: int,
    channels: tuple[str, ...],
    ts_ms: tuple[int, ...],
    outcome: str = "expired",
) -> ClosedJourney:
    """The unconverted rest of a journey that went idle: its id is the person, outcome and last event time.

    >>> expired_journey("acme", "u1", 5000, ("email",), (4000,)).journey_id
    'u1:expired:5000'
    """
    return ClosedJourney(
        tenant_id=tenant_id,
        person_id=person_id,
        journey_id=f"{person_id}:{outcome}:{last_event_ms}",
        outcome=outcome,
        closed_at_ms=last_event_ms,
        conversion_id="",
        value=0.0,
        touch_channels=channels,
        touch_ts_ms=ts_ms,
    )


def _seen_touch(j: Journey, event_id: str) -> bool:
    """True if this touch event id came before (within the last ``RECENT_TOUCH_IDS``); else remember it."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=DIGEST_BYTES).digest()
    recent = j.recent_touch_ids
    at = recent.find(digest)
    while at >= 0:
        if at % DIGEST_BYTES == 0:
            return True
        at = recent.find(digest, at + 1)
    j.recent_touch_ids = (recent + digest)[-RECENT_TOUCH_IDS * DIGEST_BYTES :]
    return False


def _add_touch(j: Journey, pe: PersonEvent, cfg: TenantConfig) -> None:
    ev = pe.event
    ts_ms = ev.ts_ms
    utm = ev.utm
    if utm is not EMPTY_UTM and not utm.is_empty():
        first = j.first_utm is None or ts_ms < j.first_utm[0]
        last = j.last_utm is None or ts_ms >= j.last_utm[0]
        if first or last:
            utm = intern_utm(utm)
            if first:
                j.first_utm = (ts_ms, utm)
            if last:
                j.last_utm = (ts_ms, utm)
    if not is_touchpoint(pe, cfg) or ts_ms <= j.consumed_until_ms:
        return  # counted in KPIs, never credit: not a touchpoint, or its time was already credited
    j.insert(ts_ms, intern_meta((ev.event_type, ev.channel, ev.campaign_id)), ev.event_id)
    _cap_touches(j, cfg)


def _cap_touches(j: Journey, cfg: TenantConfig) -> None:
    """Keep at most the tenant's ``max_touches``, the newest."""
    if len(j.ts) > cfg.max_touches:
        j.drop_oldest(len(j.ts) - cfg.max_touches)


def _prune(j: Journey, ctx: TenantContext) -> None:
    ts = j.ts
    if ts:
        horizon = j.last_event_ms - ctx.horizon_ms
        if ts[0] < horizon:
            j.drop_oldest(bisect.bisect_left(ts, horizon))
    convs = j.seen_conversions
    if convs:
        keep_after = j.last_event_ms - ctx.idle_ttl_ms
        if len(convs) > MAX_SEEN_CONVERSIONS or any(c[1] < keep_after for c in convs):
            j.seen_conversions = [c for c in convs if c[1] >= keep_after][-MAX_SEEN_CONVERSIONS:]


# --------------------------------------------------------------------------- #
# Scoring (pure functions of the touches)
# --------------------------------------------------------------------------- #


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
    weights: ScoringWeights = UNTRAINED,
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
        shares = attribution.score(model, ts, channels, ev.ts_ms, cfg, weights) if eligible else [1.0]
        revenue = attribution.split_revenue(shares, conv.value)
        version = weights.version if model == "data_driven" else 0
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


def _utm_at(j: Journey, ts_ms: int) -> Utm:
    """The newest UTMs known at ``ts_ms`` (an out-of-order later touch does not count)."""
    for known in (j.last_utm, j.first_utm):
        if known is not None and known[0] <= ts_ms:
            return known[1]
    return EMPTY_UTM


def conversion_row(pe: PersonEvent, eligible: list[Touch], j: Journey) -> ConversionRow:
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
        first_utm=j.first_utm[1] if j.first_utm else EMPTY_UTM,
        last_utm=_utm_at(j, ev.ts_ms),
    )
