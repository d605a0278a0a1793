"""Remembers which conversion ids a tenant has already credited, across persons.

Keyed by tenant x conversion_id, this step sits after the journeys: each
person's events reach their journey on one path, in order, and every
conversion is scored there; this step then keeps the first ``ScoredConversion``
of each id and turns later copies into ``duplicate_conversion`` dead letters
(counted and visible, never silently dropped). A restatement of the kept copy
(the same conversion event scored again with a higher revision, perhaps under
the person a device was linked to) is not a copy: it passes. So the same
purchase sent once before login (anonymous id) and again after (user id) is
credited once. (The
copy still took its own person's touches; the device graph makes such copies
one person, caught in the journey itself.)

It keeps no person id (neither in state nor in its dead letters), so that
an erased person (``creditflow.forgotten``) leaves nothing here; a
conversion id is the tenant's order id.

Bound: one small record per conversion id, discarded after
``TenantConfig.conversion_dedup_days`` of wall time (``notify_at``); a copy
arriving more than that much event time after the first counts as new.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from bytewax.operators import StatefulLogic

from creditflow.config import DAY_MS, TenantConfigs
from creditflow.events import (
    ClosedJourney,
    ConversionRow,
    CreditRow,
    DeadLetter,
    Event,
    SourcePosition,
)
from creditflow.kpis import KpiDelta
from state.wake_time import SecondsWake

if TYPE_CHECKING:
    from state.journeys import ScoredConversion

STATE_LAYOUT_VERSION = 1

DedupOutput = CreditRow | ConversionRow | KpiDelta | DeadLetter | ClosedJourney


class SeenConversion(NamedTuple):
    """The record kept per conversion id.

    ``ConversionDedupLogic.snapshot`` returns it as a plain tuple (a
    ``SeenConversionRow``): it pickles in C, and no key's row spells this
    class's module and name (~40 bytes each). A resume reads either, and
    snapshots of earlier creditflows (an object pickled through this name)
    load as a ``SeenConversion``.
    """

    person_id: str
    """Always '': the person is not kept here (an erased person must leave no trace in this state); the
    field stays for the snapshots of layout 1 that hold one."""
    event_id: str
    ts_ms: int
    seen_wall_s: float
    window_ms: int
    layout: int = STATE_LAYOUT_VERSION


SeenConversionRow = tuple[str, str, int, float, int, int]
"""A ``SeenConversion`` as a plain tuple (what ``ConversionDedupLogic.snapshot`` returns)."""

SEEN_CONVERSION_LAYOUT_AT = SeenConversion._fields.index("layout")
"""Where a row holds its layout (``operators.state_guard``)."""


def duplicate_conversion(event: Event, first: str) -> DeadLetter:
    """The dead letter of a conversion whose id was already credited (``first`` says where)."""
    conv = event.conversion
    assert conv is not None
    raw = {"event_id": event.event_id, "conversion_id": conv.conversion_id, "value": conv.value, "ts_ms": event.ts_ms}
    return _duplicate_conversion_letter(event.tenant_id, conv.conversion_id, event.event_id, event.position, first, raw)


def _duplicate_conversion_letter(
    tenant_id: str, conversion_id: str, event_id: str, position: SourcePosition, first: str, raw: dict[str, Any]
) -> DeadLetter:
    return DeadLetter(
        reason="duplicate_conversion",
        detail=(
            f"conversion_id {conversion_id!r} of tenant {tenant_id!r} was already credited from "
            f"{first}; this copy earns no credit. Send each conversion once, or rely on this de-duplication"
        ),
        raw=orjson.dumps(raw),
        position=position,
        tenant_id=tenant_id,
        event_id=event_id,
        event_type="conversion",
    )


def duplicate_event(event: Event) -> DeadLetter:
    """The dead letter of a touch whose event id this person already sent (counted once, credited once)."""
    return DeadLetter(
        reason="duplicate_event",
        detail=(
            f"event_id {event.event_id!r} ({event.event_type}) of tenant {event.tenant_id!r} was already received "
            "for this person; the copy is not counted again. Give every event a unique event_id and retry "
            "deliveries with the same one (they are de-duplicated here)"
        ),
        raw=orjson.dumps({"event_id": event.event_id, "event_type": event.event_type, "ts_ms": event.ts_ms}),
        position=event.position,
        tenant_id=event.tenant_id,
        event_id=event.event_id,
        event_type=event.event_type,
    )


class ConversionDedupLogic(SecondsWake, StatefulLogic["ScoredConversion", DedupOutput, SeenConversionRow]):
    """Passes the first scored copy of a conversion id as rows; dead-letters later copies."""

    def __init__(
        self, configs: TenantConfigs, resume: SeenConversionRow | SeenConversion | None, now: Callable[[], float]
    ) -> None:
        self._configs = configs
        self._now = now
        self.seen = None if resume is None else SeenConversion(*resume)

    def on_item(self, value: ScoredConversion) -> tuple[Iterable[DedupOutput], bool]:
        conv = value.conversion
        window_ms = int(self._configs.for_tenant(conv.tenant_id).conversion_dedup_days * DAY_MS)
        seen = self.seen
        if seen is None or abs(conv.conversion_ts_ms - seen.ts_ms) > window_ms:
            self.seen = SeenConversion("", value.event_id, conv.conversion_ts_ms, self._now(), window_ms)
            return value.rows(), False
        if value.event_id == seen.event_id:  # the kept conversion, restated
            return value.rows(), False
        return [self._duplicate(value, seen)], False

    def on_notify(self) -> tuple[Iterable[DedupOutput], bool]:
        return (), True

    def on_eof(self) -> tuple[Iterable[DedupOutput], bool]:
        return (), False

    def notify_at_s(self) -> float | None:
        """``notify_at`` in epoch seconds."""
        return None if self.seen is None else self.seen.seen_wall_s + self.seen.window_ms / 1000.0

    def snapshot(self) -> SeenConversionRow:
        assert self.seen is not None
        return tuple(self.seen)  # type: ignore[return-value]  # a plain tuple: pickles in C

    @staticmethod
    def _duplicate(value: ScoredConversion, seen: SeenConversion) -> DeadLetter:
        conv = value.conversion
        first = f"event {seen.event_id!r} (event time {seen.ts_ms} ms)"
        raw = {"event_id": value.event_id, "conversion_id": conv.conversion_id}
        return _duplicate_conversion_letter(
            conv.tenant_id, conv.conversion_id, value.event_id, value.position, first, raw
        )
