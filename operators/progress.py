"""Progress of a long run, logged by each process every few seconds."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable

from creditflow.events import DeadLetter

log = logging.getLogger("creditflow.progress")


class ProgressCounter:
    """Counts decoded events and dead letters and logs a line every ``every_s``.

    Counts are per process and for humans; the durable counts are the rows in
    ClickHouse (``dead_letters`` by reason).
    """

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self.events = 0
        self.dead = Counter[str]()
        self._started = self._last = time.monotonic()
        self._last_events = 0

    def add(self, items: Iterable[object]) -> None:
        for it in items:
            if isinstance(it, DeadLetter):
                self.dead[it.reason] += 1
            else:
                self.events += 1
        now = time.monotonic()
        if now - self._last >= self.every_s:
            rate = (self.events - self._last_events) / (now - self._last)
            log.info(
                "%d events decoded (%.0f/s), %d dead letters %s",
                self.events,
                rate,
                sum(self.dead.values()),
                dict(self.dead),
            )
            self._last, self._last_events = now, self.events

    def log_totals(self) -> None:
        """One closing line with this process's totals."""
        elapsed = time.monotonic() - self._started
        log.info(
            "run totals: %d events decoded in %.1f s, %d dead letters %s",
            self.events,
            elapsed,
            sum(self.dead.values()),
            dict(self.dead),
        )
