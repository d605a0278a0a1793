"""Per-person touchpoint journeys: the recoverable state behind every credit row.

One ``JourneyLogic`` lives per (tenant, person) key. It keeps the person's
touches in event-time order, and at each conversion scores every configured
attribution model and emits the credit rows, the conversion row and the KPI
deltas of the tenant's KPI model.

Credit is a function of the person's events, not of their arrival order. A
conversion credits the eligible touches after the person's previous
conversion *in event time* (ties by conversion id). Touches stay after a
conversion credited them, for the lookback, so that an event arriving late -
a touch from a device linked later, a conversion delivered out of order, a
device's journey adopted at a login (``Adopt``) - restates every conversion
whose lookback window it falls in: the conversion is scored again and emitted
whole with a higher ``revision``. The revision counts the events in the
conversion's window (touches and the person's other conversions within the
longest lookback before it), so it rises with every event that reaches the
window and is the same for the same events in any order: whatever order and
batching a replay after a crash brings, its highest revision holds the same
rows, and the rows of the highest revision are the credit
(``attribution_credits_latest``). A conversion is restated while it is
*open*: among the newest ``MAX_OPEN_CONVERSIONS``, less than the longest
lookback older than the person's newest event, and with nothing in its window
forgotten (``Journey.forgotten_until_ms``). Later events no longer change it.

KPI windows follow restatements exactly (``KpiDelta.events``): each scoring
sends one delta per (channel, campaign) of the touches in the window, plus the
unattributed row, carrying the change of credit and revenue and of the
conversion's revision. So a window row's revision also depends only on the
events, and its highest revision holds the final credit.

Bounds (every piece of this state ends):

- touches older than the longest lookback before the person's newest event
  (or before the oldest open conversion, if earlier) are pruned on every
  event; at most ``TenantConfig.max_touches`` touches are kept (the oldest go
  first);
- at most ``MAX_SEEN_CONVERSIONS`` conversion ids are remembered for
  de-duplication, and none older than the idle TTL; of these at most
  ``MAX_OPEN_CONVERSIONS`` open ones with what restating needs (id, time,
  event id, value, currency, type); the last ``RECENT_TOUCH_IDS`` touch event
  ids as 8-byte digests (128 bytes);
- the whole state is discarded once the person has been idle for
  ``TenantConfig.idle_ttl_days`` of wall time (``notify_at``) or when an event
  arrives more than that much event time after the previous one.

Erasure: a ``deletion_request`` discards the whole state at once, consent
included, lists the person in the process's suppression list
(``creditflow.forgotten``) and emits a ``ForgetPerson`` for the sinks; the
person's later events are suppressed (``forgotten``) and a device journey
adopted for them is dropped.

Memory: between events a journey is a packed ``JourneyState``
(``state.journey_state``: one ``bytes`` plus one tuple of values shared across
persons), under 500 bytes per key with the key itself
(``loadtest/state_memory.py``). The logic unpacks it into a ``Journey`` for one
batch of events and packs it back at the end; ``snapshot()`` returns the
packed state as a plain row (``JourneyRow``: the bytes as they are, the shared
values as tuples), which pickles in C.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from bytewax.operators import StatefulBatchLogic
from mypy_extensions import mypyc_attr

from creditflow import attribution
from creditflow.config import TenantConfig, TenantConfigs
from creditflow.consent import allows, decision_of, state_of
from creditflow.events import (
    EMPTY_UTM,
    UNATTRIBUTED_CHANNEL,
    ClosedJourney,
    Conversion,
    ConversionRow,
    CreditRow,
    DeadLetter,
    Event,
    PersonEvent,
    SourcePosition,
    SuppressedEvent,
    Utm,
)
from creditflow.forgotten import ForgetPerson, ForgottenIds
from creditflow.kpis import KpiDelta, delta_of
from creditflow.pii import PiiHasher
from creditflow.weights import UNTRAINED, ScoringWeights, WeightsProvider
from state.conversion_dedup import duplicate_conversion, duplicate_event
from state.journey_state import (
    CONSENT_UNKNOWN,
    CONSENT_WITHDRAWN,
    DIGEST_BYTES,
    JOURNEY_LAYOUT_AT,
    READABLE_LAYOUTS,
    STATE_LAYOUT_VERSION,
    Journey,
    JourneyRow,
    JourneyState,
    OpenConversion,
    Touch,
    intern_meta,
    intern_utm,
    interned_refs,
    journey_row,
    pack_id,
    unpack_id,
    upgraded_row,
    wall_s_of,
)
from state.wake_time import SecondsWake

__all__ = [
    "JOURNEY_LAYOUT_AT",
    "Adopt",
    "INTERNAL_CHANNEL",
    "MAX_OPEN_CONVERSIONS",
    "MAX_SEEN_CONVERSIONS",
    "ExpiredJourney",
    "READABLE_LAYOUTS",
    "RECENT_TOUCH_IDS",
    "STATE_LAYOUT_VERSION",
    "JourneyEnv",
    "JourneyLogic",
    "JourneyOutput",
    "JourneyRow",
    "JourneyState",
    "ScoredConversion",
    "TenantContext",
    "Touch",
    "conversion_row",
    "credit_rows",
    "eligible_for",
    "kpi_deltas",
    "revision_of",
    "standing",
    "is_touchpoint",
]

MAX_SEEN_CONVERSIONS = 32
"""Conversion ids remembered per person to refuse crediting one twice."""

MAX_OPEN_CONVERSIONS = 8
"""Conversions per person that late events may still restate (the newest; older ones keep their credit)."""

RECENT_TOUCH_IDS = 16
"""Touch event ids remembered per person (as 8-byte digests) to refuse a touch delivered twice."""

INTERNAL_CHANNEL = "(internal)"
"""Channel the flow gives to page views whose referrer is the tenant's own site."""


@mypyc_attr(native_class=False)  # pickled: snapshots, items between processes
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
    revision: int = 0
    """The scoring's revision (``ConversionRow.revision``); a restatement has a higher one."""

    def rows(self) -> list[CreditRow | ConversionRow | KpiDelta | ClosedJourney]:
        rows: list[CreditRow | ConversionRow | KpiDelta | ClosedJourney] = [
            *self.credits,
            self.conversion,
            *self.kpi_deltas,
        ]
        if self.journey is not None:
            rows.append(self.journey)
        return rows


@mypyc_attr(native_class=False)  # pickled: snapshots, items between processes
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


@mypyc_attr(native_class=False)  # pickled: snapshots, items between processes
@dataclass(frozen=True, slots=True)
class Adopt:
    """A device's journey handed to the person it was just linked to (``state.device_graph``).

    The person's journey takes in the device's touches, its conversions and its
    consent, as if the person had made them: a later conversion of the person
    credits the touches, and open conversions of either side whose window the
    merge changes are restated.
    """

    tenant_id: str
    person_id: str
    """The person the device now belongs to (``u:<user_id>``)."""
    state: JourneyState
    position: SourcePosition
    """Where the event that made the link came from (restated credit carries it to the KPI windows)."""


JourneyOutput = (
    ScoredConversion | KpiDelta | DeadLetter | ClosedJourney | ExpiredJourney | SuppressedEvent | ForgetPerson
)


# --------------------------------------------------------------------------- #
# The logic
# --------------------------------------------------------------------------- #


class JourneyEnv:
    """What every journey of a flow shares: tenant settings, weights and the wall clock.

    One per flow (not per key): each ``JourneyLogic`` keeps one reference to its
    tenant's ``TenantContext``. ``now`` returns the wall clock as epoch seconds.
    """

    __slots__ = ("configs", "weights", "now", "archive", "forgotten", "default", "tenants")

    def __init__(
        self,
        configs: TenantConfigs,
        weights: WeightsProvider,
        now: Callable[[], float],
        archive: bool = False,
        forgotten: ForgottenIds | None = None,
    ) -> None:
        self.configs = configs
        self.weights = weights
        self.now = now
        self.archive = archive
        """Emit every closed journey (``ClosedJourney``, ``ExpiredJourney``) for the Parquet archive."""
        self.forgotten = forgotten if forgotten is not None else ForgottenIds(PiiHasher.unkeyed().tenant_salt)
        """The process's suppression list (``creditflow.forgotten``): erased persons are refused."""
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


class JourneyLogic(SecondsWake):
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

    def __init__(self, env: JourneyEnv, resume: JourneyRow | None) -> None:
        self._ctx = env.default
        self._packed: bytes
        self._refs: tuple[Any, ...]
        if resume is None:
            self._packed, self._refs = b"", ()
        else:
            layout, self._packed, refs = upgraded_row(resume)
            self._refs = interned_refs(refs, layout)

    @classmethod
    def holding(cls, env: JourneyEnv, packed: bytes, refs: tuple[Any, ...]) -> JourneyLogic:
        """A logic holding a journey this process packed (``Journey.pack``)."""
        logic = cls(env, None)
        logic._packed, logic._refs = packed, refs
        return logic

    @property
    def state(self) -> JourneyState:
        """The current state (as ``snapshot()``)."""
        return JourneyState(self._packed, self._refs)

    # -- bytewax hooks -------------------------------------------------
    def on_batch(self, values: list[PersonEvent | Adopt]) -> tuple[Iterable[JourneyOutput], bool]:
        out: list[JourneyOutput] = []
        j = Journey.unpack(self._packed, self._refs) if self._packed else Journey()
        forgotten = self._ctx.env.forgotten
        for value in values:
            if isinstance(value, Adopt):
                if not forgotten.has(value.tenant_id, value.person_id):  # else the device's journey is dropped
                    j = self._adopt(j, value, out)
                continue
            ev = value.event
            if ev.event_type == "deletion_request":
                j = Journey()  # everything of the person, consent included, goes
                out.append(erase(forgotten, ev.tenant_id, value.person_id, ev.ts_ms))
            elif forgotten.has(ev.tenant_id, value.person_id):
                out.append(suppressed(ev, "forgotten"))
            else:
                j = self._apply(j, value, out)
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
        # idle TTL (forget the person; the touches after the newest conversion close `expired`).
        ctx = self._ctx
        closing = ctx.training_close_s < ctx.idle_ttl_s and ctx.env.now() < wall_s_of(self._packed) + ctx.idle_ttl_s
        forget = not closing
        if ctx.env.archive and self._packed:
            j = Journey.unpack(self._packed, self._refs)
            channels, times = _open_path(j)
            if times:
                outcome = "expired" if forget else "unconverted"
                return (ExpiredJourney(j.last_event_ms, channels, times, outcome),), forget
        return (), forget

    def on_eof(self) -> tuple[Iterable[JourneyOutput], bool]:
        return (), False

    def notify_at_s(self) -> float:
        """``notify_at`` in epoch seconds (what sharded state reads, without a datetime per event)."""
        ctx = self._ctx
        last = wall_s_of(self._packed)
        due = last + ctx.idle_ttl_s
        close = last + ctx.training_close_s  # inf without the archive
        if close < due and ctx.env.now() < close:
            due = close
        return due

    def snapshot(self) -> JourneyRow:
        return journey_row(self._packed, self._refs)

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
            channels, times = _open_path(j)
            if env.archive and times:
                out.append(expired_journey(ev.tenant_id, pe.person_id, j.last_event_ms, channels, times))
            j = _forget_activity(j)
        if ts_ms > j.last_event_ms:
            j.last_event_ms = ts_ms
        if ev.is_touch:
            if _holds_touch(j, ts_ms, ev.event_id) or _seen_touch(j, ev.event_id):
                out.append(duplicate_event(ev))
                return j
            _note_utm(j, ev)
            delta = delta_of(ev, cfg.kpi_volume_source)
            if delta is not None:
                out.append(delta)
            if is_touchpoint(pe, cfg) and ts_ms > j.forgotten_until_ms:
                affected = self._standings(j, ts_ms, ev.tenant_id)
                j.insert(ts_ms, intern_meta((ev.event_type, ev.channel, ev.campaign_id)), ev.event_id)
                _cap_touches(j, ctx)
                self._restate(j, affected, ev.tenant_id, pe.person_id, ev.position, out)
        elif ev.event_type == "conversion":
            self._convert(j, pe, out)
        _prune(j, ctx)
        return j

    def _adopt(self, j: Journey, adopt: Adopt, out: list[JourneyOutput]) -> Journey:
        """Take in a linked device's journey (see ``Adopt``); the later consent decision of the two wins.

        Every open conversion of either side whose window the merge changes is restated.
        """
        env = self._ctx.env
        ctx = self._ctx = env.tenants.get(adopt.tenant_id, env.default)
        cfg = ctx.cfg
        tenant = adopt.tenant_id
        a = adopt.state.unpacked()
        if a.consent_ts_ms > j.consent_ts_ms:
            j.consent, j.consent_ts_ms = a.consent, a.consent_ts_ms
            if a.consent == CONSENT_WITHDRAWN:
                j = _forget_activity(j)
        if not allows(j.consent, cfg.consent_mode):
            return j
        # Where each open conversion stood, on its own side, before the merge.
        before = {oc.conversion_id: self._standing(j, oc, tenant) for oc in j.opens}
        for oc in a.opens:
            if oc.conversion_id not in before:
                before[oc.conversion_id] = self._standing(a, oc, tenant)
        j.last_event_ms = max(j.last_event_ms, a.last_event_ms)
        j.last_seen_wall_s = env.now()
        if a.first_utm is not None and (j.first_utm is None or a.first_utm[0] < j.first_utm[0]):
            j.first_utm = a.first_utm
        if a.last_utm is not None and (j.last_utm is None or a.last_utm[0] >= j.last_utm[0]):
            j.last_utm = a.last_utm
        for ts_ms, meta, packed_id in zip(a.ts, a.metas, a.ids(), strict=True):
            event_id = unpack_id(packed_id)
            if ts_ms > j.forgotten_until_ms and not _holds_touch(j, ts_ms, event_id) and not _seen_touch(j, event_id):
                j.insert(ts_ms, meta, event_id)
        _remember_digests(j, a.recent_touch_ids)  # its touches kept as ids only (e.g. impressions): copies refused
        known_ids = {c[0] for c in j.seen_conversions}
        j.seen_conversions = sorted(
            j.seen_conversions + [c for c in a.seen_conversions if c[0] not in known_ids], key=_conversion_order
        )
        known = {oc.conversion_id for oc in j.opens}
        _set_opens(j, j.opens + [oc for oc in a.opens if oc.conversion_id not in known], ctx)
        _cap_touches(j, ctx)
        affected = [(oc, before[oc.conversion_id]) for oc in j.opens if oc.conversion_id in before]
        self._restate(j, affected, tenant, adopt.person_id, adopt.position, out)
        _prune(j, ctx)
        return j

    def _convert(self, j: Journey, pe: PersonEvent, out: list[JourneyOutput]) -> None:
        ev = pe.event
        conv = ev.conversion
        assert conv is not None, "the decoder guarantees conversion events carry a conversion"
        cid = pack_id(conv.conversion_id)
        first = next((c for c in j.seen_conversions if c[0] == cid), None)
        if first is not None:  # already credited for this person: a retry
            out.append(duplicate_conversion(ev, f"this person's conversion at event time {first[1]} ms"))
            return
        ctx = self._ctx
        # Conversions later in event time that arrived first: this one is in their windows.
        affected = self._standings(j, ev.ts_ms, ev.tenant_id)
        bisect.insort(j.seen_conversions, (cid, ev.ts_ms), key=_conversion_order)
        oc = _open_conversion(ev, conv)
        if ev.ts_ms - ctx.horizon_ms > j.forgotten_until_ms:  # all of its window is known: it may be restated
            _set_opens(j, [*j.opens, oc], ctx)
        self._score(j, oc, ev.tenant_id, pe.person_id, ev.position, None, out)
        self._restate(j, affected, ev.tenant_id, pe.person_id, ev.position, out)

    # -- scoring -----------------------------------------------------------
    def _standings(self, j: Journey, ts_ms: int, tenant_id: str) -> list[tuple[OpenConversion, _Standing]]:
        """The open conversions whose window holds event time ``ts_ms``, each with where it stands now."""
        horizon = self._ctx.horizon_ms
        return [(oc, self._standing(j, oc, tenant_id)) for oc in j.opens if oc.ts_ms - horizon <= ts_ms <= oc.ts_ms]

    def _standing(self, j: Journey, oc: OpenConversion, tenant_id: str) -> _Standing:
        ctx = self._ctx
        eligible = eligible_for(j, oc, ctx.cfg, ctx.horizon_ms)
        return standing(j, oc, eligible, ctx.cfg, ctx.horizon_ms, ctx.env.weights.current(tenant_id))

    def _restate(
        self,
        j: Journey,
        affected: list[tuple[OpenConversion, _Standing]],
        tenant_id: str,
        person_id: str,
        position: SourcePosition,
        out: list[JourneyOutput],
    ) -> None:
        """Score again each of ``affected`` that is still open and whose window changed."""
        for oc, before in affected:
            if oc in j.opens:
                self._score(j, oc, tenant_id, person_id, position, before, out)

    def _score(
        self,
        j: Journey,
        oc: OpenConversion,
        tenant_id: str,
        person_id: str,
        position: SourcePosition,
        before: _Standing | None,
        out: list[JourneyOutput],
    ) -> None:
        """Emit the scoring of ``oc`` on ``j`` (``before``: the previous one, whose KPI deltas it changes)."""
        ctx = self._ctx
        cfg = ctx.cfg
        weights = ctx.env.weights.current(tenant_id)
        eligible = eligible_for(j, oc, cfg, ctx.horizon_ms)
        now = standing(j, oc, eligible, cfg, ctx.horizon_ms, weights)
        if before is not None and now.revision == before.revision:
            return  # nothing reached its window
        rows = credit_rows(tenant_id, person_id, oc, eligible, cfg, weights, now.revision)
        deltas = kpi_deltas(tenant_id, oc.ts_ms, position, before, now)
        journey = None
        if ctx.env.archive:
            journey = ClosedJourney(
                tenant_id=tenant_id,
                person_id=person_id,
                journey_id=f"converted:{oc.conversion_id}",
                outcome="converted",
                closed_at_ms=oc.ts_ms,
                conversion_id=oc.conversion_id,
                value=oc.value,
                touch_channels=tuple(t[2] for t in eligible),
                touch_ts_ms=tuple(t[0] for t in eligible),
                revision=now.revision,
            )
        conversion = conversion_row(tenant_id, person_id, oc, eligible, j, now.revision)
        out.append(
            ScoredConversion(person_id, oc.event_id, conversion, tuple(rows), deltas, position, journey, now.revision)
        )


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


def erase(forgotten: ForgottenIds, tenant_id: str, person_key: str, requested_ts_ms: int) -> ForgetPerson:
    """List ``person_key`` as erased in this process and say so to the sinks (``creditflow.forgotten``).

    The caller drops the key's state; from now on this process refuses the key's events.
    """
    return ForgetPerson(tenant_id, person_key, forgotten.add(tenant_id, person_key), requested_ts_ms)


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
    """The channels and times of the touches after the person's newest conversion, for an unconverted archive row."""
    after = max(j.forgotten_until_ms, j.seen_conversions[-1][1] if j.seen_conversions else -1)
    k = bisect.bisect_right(j.ts, after)
    return tuple(m[1] for m in j.metas[k:]), tuple(j.ts[k:])


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
    if _knows_digest(j.recent_touch_ids, digest):
        return True
    j.recent_touch_ids = (j.recent_touch_ids + digest)[-RECENT_TOUCH_IDS * DIGEST_BYTES :]
    return False


def _knows_digest(recent: bytes, digest: bytes) -> bool:
    at = recent.find(digest)
    while at >= 0:
        if at % DIGEST_BYTES == 0:
            return True
        at = recent.find(digest, at + 1)
    return False


def _remember_digests(j: Journey, digests: bytes) -> None:
    """Take in another journey's remembered touch ids (an adopted device's), keeping the last ``RECENT_TOUCH_IDS``."""
    recent = j.recent_touch_ids
    for at in range(0, len(digests), DIGEST_BYTES):
        digest = digests[at : at + DIGEST_BYTES]
        if not _knows_digest(recent, digest):
            recent += digest
    j.recent_touch_ids = recent[-RECENT_TOUCH_IDS * DIGEST_BYTES :]


def _holds_touch(j: Journey, ts_ms: int, event_id: str) -> bool:
    """Whether the journey keeps a touch with this id at this time (a copy; older than the remembered ids)."""
    ts = j.ts
    lo, hi = bisect.bisect_left(ts, ts_ms), bisect.bisect_right(ts, ts_ms)
    return lo < hi and pack_id(event_id) in j.ids()[lo:hi]


def _note_utm(j: Journey, ev: Event) -> None:
    """Remember the touch's UTMs if they are the person's first or newest."""
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


def _conversion_order(c: tuple[bytes, int]) -> tuple[int, bytes]:
    """Seen conversions in event time, ties by id: the order in which conversions credit touches."""
    return c[1], c[0]


def _open_order(oc: OpenConversion) -> tuple[int, bytes]:
    return oc.ts_ms, pack_id(oc.conversion_id)


def _open_conversion(ev: Event, conv: Conversion) -> OpenConversion:
    return OpenConversion(conv.conversion_id, ev.ts_ms, ev.event_id, conv.value, conv.currency, conv.type)


def _set_opens(j: Journey, opens: list[OpenConversion], ctx: TenantContext) -> None:
    """Keep the restatable ones of ``opens``, in order: the newest ``MAX_OPEN_CONVERSIONS`` whose window
    reaches neither past the person's newest event by more than the horizon nor into what was forgotten."""
    horizon = ctx.horizon_ms
    oldest = j.last_event_ms - horizon
    kept = sorted((o for o in opens if o.ts_ms >= oldest and o.ts_ms - horizon > j.forgotten_until_ms), key=_open_order)
    j.opens = kept[-MAX_OPEN_CONVERSIONS:]


def _forget_touches(j: Journey, count: int, ctx: TenantContext) -> None:
    """Drop the ``count`` oldest touches; conversions whose window held one can no longer be restated."""
    if count <= 0:
        return
    j.forgotten_until_ms = max(j.forgotten_until_ms, j.ts[count - 1])
    j.drop_oldest(count)
    if j.opens:
        _set_opens(j, j.opens, ctx)


def _cap_touches(j: Journey, ctx: TenantContext) -> None:
    """Keep at most the tenant's ``max_touches``, the newest."""
    excess = len(j.ts) - ctx.cfg.max_touches
    if excess > 0:
        _forget_touches(j, excess, ctx)


def _prune(j: Journey, ctx: TenantContext) -> None:
    """Apply the bounds of the module doc: aged open conversions, touches past every window, old conversion ids."""
    horizon = ctx.horizon_ms
    if j.opens and j.opens[0].ts_ms < j.last_event_ms - horizon:
        _set_opens(j, j.opens, ctx)
    cutoff = j.last_event_ms - horizon
    if j.opens:
        cutoff = min(cutoff, j.opens[0].ts_ms - horizon)  # an open conversion's window stays whole
    ts = j.ts
    if ts and ts[0] < cutoff:
        _forget_touches(j, bisect.bisect_left(ts, cutoff), ctx)
    convs = j.seen_conversions
    if convs:
        keep_after = j.last_event_ms - ctx.idle_ttl_ms
        if len(convs) > MAX_SEEN_CONVERSIONS or convs[0][1] < keep_after:
            kept = [c for c in convs if c[1] >= keep_after][-MAX_SEEN_CONVERSIONS:]
            dropped = convs[len(convs) - len(kept) - 1] if len(kept) < len(convs) else None
            j.seen_conversions = kept
            if dropped is not None:
                j.forgotten_until_ms = max(j.forgotten_until_ms, dropped[1])
                _set_opens(j, j.opens, ctx)


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


class _Standing(NamedTuple):
    """Where a conversion's scoring stands: its revision and what it gave each KPI window row."""

    revision: int
    kpi: dict[tuple[str, str], tuple[float, float]]
    """(channel, campaign_id) -> (credit, revenue) of the tenant's KPI model, for the channel and campaign of
    every touch in the window (0 when not credited) and the unattributed row."""


UNATTRIBUTED_ROW = (UNATTRIBUTED_CHANNEL, "")


def _window(j: Journey, ts_ms: int, horizon_ms: int) -> tuple[int, int]:
    """Indices [lo, hi) of the touches in the window of a conversion at ``ts_ms``."""
    return bisect.bisect_left(j.ts, ts_ms - horizon_ms), bisect.bisect_right(j.ts, ts_ms)


def revision_of(j: Journey, oc: OpenConversion, horizon_ms: int) -> int:
    """How many events lie in the conversion's window: touches and the person's other conversions.

    The window is the longest lookback before the conversion, its own time included.
    """
    lo, hi = _window(j, oc.ts_ms, horizon_ms)
    start = oc.ts_ms - horizon_ms
    cid = pack_id(oc.conversion_id)
    return hi - lo + sum(1 for c, ts in j.seen_conversions if start <= ts <= oc.ts_ms and c != cid)


def credited_after(j: Journey, oc: OpenConversion) -> int:
    """Event time after which touches may earn this conversion credit: the person's previous conversion
    (in event time, ties by id), or what the journey forgot."""
    key = (oc.ts_ms, pack_id(oc.conversion_id))
    after = j.forgotten_until_ms
    for c in j.seen_conversions:
        if _conversion_order(c) >= key:
            break
        after = max(after, c[1])
    return after


def eligible_for(j: Journey, oc: OpenConversion, cfg: TenantConfig, horizon_ms: int) -> list[Touch]:
    """The touches a conversion credits: after the previous conversion, at or before it, within lookback."""
    lo, hi = _window(j, oc.ts_ms, horizon_ms)
    after = credited_after(j, oc)
    ids = j.ids()
    eligible = []
    for i in range(lo, hi):
        ts, meta = j.ts[i], j.metas[i]
        if ts > after and oc.ts_ms - ts <= cfg.lookback_ms(meta[0]):
            eligible.append((ts, meta[0], meta[1], meta[2], unpack_id(ids[i])))
    return eligible


def _shares(
    model: str, eligible: list[Touch], oc: OpenConversion, cfg: TenantConfig, weights: ScoringWeights
) -> tuple[list[Touch], list[float], list[float]]:
    """The touches (or the unattributed pseudo-touch) with their credit and revenue under ``model``."""
    if not eligible:  # no eligible touch: one pseudo-touch of the unattributed channel takes it all
        return [(oc.ts_ms, "", UNATTRIBUTED_CHANNEL, "", "")], [1.0], [oc.value]
    ts = [t[0] for t in eligible]
    channels = [t[2] for t in eligible]
    shares = attribution.score(model, ts, channels, oc.ts_ms, cfg, weights)
    return eligible, shares, attribution.split_revenue(shares, oc.value)


def standing(
    j: Journey,
    oc: OpenConversion,
    eligible: list[Touch],
    cfg: TenantConfig,
    horizon_ms: int,
    weights: ScoringWeights = UNTRAINED,
) -> _Standing:
    """The revision of ``oc`` on ``j`` and its KPI credit per window row (see ``_Standing``), given its
    ``eligible`` touches (``eligible_for``)."""
    lo, hi = _window(j, oc.ts_ms, horizon_ms)
    kpi = dict.fromkeys(((m[1], m[2]) for m in j.metas[lo:hi]), (0.0, 0.0))
    kpi[UNATTRIBUTED_ROW] = (0.0, 0.0)
    touches, shares, revenue = _shares(cfg.kpi_model, eligible, oc, cfg, weights)
    for t, share, rev in zip(touches, shares, revenue, strict=True):
        credit, money = kpi[(t[2], t[3])]
        kpi[(t[2], t[3])] = (credit + share, money + rev)
    return _Standing(revision_of(j, oc, horizon_ms), kpi)


def kpi_deltas(
    tenant_id: str, ts_ms: int, position: SourcePosition, before: _Standing | None, now: _Standing
) -> tuple[KpiDelta, ...]:
    """The KPI increments that take the windows from ``before`` (None: the first scoring) to ``now``.

    A row the conversion reaches for the first time gets its credit and the revision plus one; a row it
    reached before gets the change of both. Summed over any sequence of scorings that ends on the same
    ``now``, every row gets the same credit and the same revision increments.
    """
    deltas = []
    for (channel, campaign), (credit, revenue) in now.kpi.items():
        prev = before.kpi.get((channel, campaign)) if before is not None else None
        if prev is None:
            delta = KpiDelta.conversion(
                tenant_id, channel, campaign, ts_ms, credit, revenue, position, now.revision + 1
            )
        else:
            assert before is not None
            delta = KpiDelta.conversion(
                tenant_id,
                channel,
                campaign,
                ts_ms,
                credit - prev[0],
                revenue - prev[1],
                position,
                now.revision - before.revision,
            )
        deltas.append(delta)
    return tuple(deltas)


def credit_rows(
    tenant_id: str,
    person_id: str,
    oc: OpenConversion,
    eligible: list[Touch],
    cfg: TenantConfig,
    weights: ScoringWeights = UNTRAINED,
    revision: int = 0,
) -> list[CreditRow]:
    """Credit rows of every configured model for one conversion.

    A conversion without an eligible touch gets one ``(unattributed)`` row per
    model holding the whole credit and value, so per-conversion sums stay 1.

    >>> oc = OpenConversion("o1", 100, "e9", 50.0, "EUR", "purchase")
    >>> cfg = TenantConfig(models=("linear",), kpi_model="linear")
    >>> rows = credit_rows("t", "u:1", oc, [(90, "click", "email", "c1", "e1")], cfg)
    >>> [(r.model, r.channel, r.credit, r.revenue_credit, r.revision) for r in rows]
    [('linear', 'email', 1.0, 50.0, 0)]
    """
    rows: list[CreditRow] = []
    for model in cfg.models:
        touches, shares, revenue = _shares(model, eligible, oc, cfg, weights)
        version = weights.version if model == "data_driven" else 0
        for t, share, rev in zip(touches, shares, revenue, strict=True):
            rows.append(
                CreditRow(
                    tenant_id=tenant_id,
                    conversion_id=oc.conversion_id,
                    person_id=person_id,
                    model=model,
                    model_version=version,
                    channel=t[2],
                    campaign_id=t[3],
                    touch_event_id=t[4],
                    touch_ts_ms=t[0],
                    conversion_ts_ms=oc.ts_ms,
                    credit=share,
                    revenue_credit=rev,
                    revision=revision,
                )
            )
    return rows


def _utm_at(j: Journey, ts_ms: int) -> Utm:
    """The newest UTMs known at ``ts_ms`` (an out-of-order later touch does not count)."""
    for known in (j.last_utm, j.first_utm):
        if known is not None and known[0] <= ts_ms:
            return known[1]
    return EMPTY_UTM


def conversion_row(
    tenant_id: str, person_id: str, oc: OpenConversion, eligible: list[Touch], j: Journey, revision: int = 0
) -> ConversionRow:
    return ConversionRow(
        tenant_id=tenant_id,
        conversion_id=oc.conversion_id,
        person_id=person_id,
        event_id=oc.event_id,
        conversion_ts_ms=oc.ts_ms,
        value=oc.value,
        currency=oc.currency,
        conversion_type=oc.conversion_type,
        touch_count=len(eligible),
        attributed=bool(eligible),
        first_touch_channel=eligible[0][2] if eligible else "",
        last_touch_channel=eligible[-1][2] if eligible else "",
        first_utm=j.first_utm[1] if j.first_utm else EMPTY_UTM,
        last_utm=_utm_at(j, oc.ts_ms),
        revision=revision,
    )
