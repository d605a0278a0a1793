"""Remembers the event ids of ad-spend reports, so a report delivered twice costs once.

Keyed by tenant x event_id. Ad-spend volume is small (one report per campaign
and interval), so one tiny record per report is cheap. Bound: each record is
discarded ``SPEND_ID_TTL_S`` of wall time after its report arrived.

(A platform that restates an interval's spend under a new event id is a
different case: both reports count; superseding reports is future work.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from bytewax.operators import StatefulLogic

from creditflow.events import DeadLetter, Event
from state.conversion_dedup import duplicate_event
from state.wake_time import SecondsWake

STATE_LAYOUT_VERSION = 1
SPEND_ID_TTL_S = 7 * 86_400.0


class SeenEvent(NamedTuple):
    """The record kept per ad-spend event id.

    ``SpendDedupLogic.snapshot`` returns it as a plain tuple (a ``SeenEventRow``:
    it pickles in C, without this class's name); a resume reads either, and
    snapshots of earlier creditflows (an object pickled through this name) load
    as a ``SeenEvent``.
    """

    seen_wall_s: float
    layout: int = STATE_LAYOUT_VERSION


SeenEventRow = tuple[float, int]
"""A ``SeenEvent`` as a plain tuple (what ``SpendDedupLogic.snapshot`` returns)."""

SEEN_EVENT_LAYOUT_AT = SeenEvent._fields.index("layout")
"""Where a row holds its layout (``operators.state_guard``)."""


class SpendDedupLogic(SecondsWake, StatefulLogic[Event, Event | DeadLetter, SeenEventRow]):
    """Passes the first report of an event id; later copies become ``duplicate_event`` dead letters."""

    def __init__(self, resume: SeenEventRow | SeenEvent | None, now: Callable[[], float]) -> None:
        self._now = now
        self.seen = None if resume is None else SeenEvent(*resume)

    def on_item(self, value: Event) -> tuple[Iterable[Event | DeadLetter], bool]:
        if self.seen is None:
            self.seen = SeenEvent(self._now())
            return [value], False
        return [duplicate_event(value)], False

    def on_notify(self) -> tuple[Iterable[Event | DeadLetter], bool]:
        return (), True

    def on_eof(self) -> tuple[Iterable[Event | DeadLetter], bool]:
        return (), False

    def notify_at_s(self) -> float | None:
        """``notify_at`` in epoch seconds."""
        return None if self.seen is None else self.seen.seen_wall_s + SPEND_ID_TTL_S

    def snapshot(self) -> SeenEventRow:
        assert self.seen is not None
        return tuple(self.seen)  # type: ignore[return-value]  # a plain tuple: pickles in C
