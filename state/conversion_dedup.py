"""Remembers which conversion ids a tenant has already credited.

Keyed by tenant x conversion_id (not by person), so the same purchase sent
once before login (anonymous id) and again after (user id) is credited once.
The second copy becomes a ``duplicate_conversion`` dead letter: counted and
visible, never silently dropped.

Bound: one small record per conversion id, discarded after
``TenantConfig.conversion_dedup_days`` of wall time (``notify_at``); a copy
arriving more than that much event time after the first counts as new.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from bytewax.operators import StatefulLogic

from creditflow.config import DAY_MS, TenantConfigs
from creditflow.events import DeadLetter, Event

STATE_LAYOUT_VERSION = 1


@dataclass(frozen=True, slots=True)
class SeenConversion:
    event_id: str
    ts_ms: int
    seen_wall_s: float
    layout: int = STATE_LAYOUT_VERSION


class ConversionDedupLogic(StatefulLogic[Event, Event | DeadLetter, SeenConversion]):
    """Passes the first event of a conversion id; dead-letters later copies."""

    def __init__(self, configs: TenantConfigs, resume: SeenConversion | None, now: Callable[[], float]) -> None:
        self._configs = configs
        self._now = now
        self.seen = resume
        self._window_ms = int(configs.defaults.conversion_dedup_days * DAY_MS)

    def on_item(self, value: Event) -> tuple[Iterable[Event | DeadLetter], bool]:
        window_ms = int(self._configs.for_tenant(value.tenant_id).conversion_dedup_days * DAY_MS)
        self._window_ms = window_ms
        seen = self.seen
        if seen is None or abs(value.ts_ms - seen.ts_ms) > window_ms:
            self.seen = SeenConversion(value.event_id, value.ts_ms, self._now())
            return [value], False
        return [self._duplicate(value, seen)], False

    def on_notify(self) -> tuple[Iterable[Event | DeadLetter], bool]:
        return (), True

    def on_eof(self) -> tuple[Iterable[Event | DeadLetter], bool]:
        return (), False

    def notify_at(self) -> datetime | None:
        if self.seen is None:
            return None
        return datetime.fromtimestamp(self.seen.seen_wall_s + self._window_ms / 1000.0, tz=UTC)

    def snapshot(self) -> SeenConversion:
        assert self.seen is not None
        return self.seen  # immutable

    @staticmethod
    def _duplicate(value: Event, seen: SeenConversion) -> DeadLetter:
        conv = value.conversion
        assert conv is not None
        same = "the same event" if value.event_id == seen.event_id else f"event {seen.event_id!r}"
        return DeadLetter(
            reason="duplicate_conversion",
            detail=(
                f"conversion_id {conv.conversion_id!r} of tenant {value.tenant_id!r} was already credited from "
                f"{same} (event time {seen.ts_ms} ms); this copy earns no credit. Send each conversion once, "
                "or rely on this de-duplication"
            ),
            raw=orjson.dumps(
                {
                    "event_id": value.event_id,
                    "conversion_id": conv.conversion_id,
                    "value": conv.value,
                    "ts_ms": value.ts_ms,
                }
            ),
            position=value.position,
            tenant_id=value.tenant_id,
            event_id=value.event_id,
            event_type=value.event_type,
        )
