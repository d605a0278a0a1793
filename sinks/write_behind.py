"""A write-behind buffer: items are written by a background thread in large, timely flushes.

An embedded ClickHouse insert costs ~10-20 ms however small it is (measured on
chDB, 2 shared cores), and Bytewax hands a sink many small batches at high
rates, one per worker activation. ``WriteBehind`` collects them and calls
``flush(items)`` from one background thread when ``flush_rows`` items are
waiting or the oldest has waited ``interval_s``. chDB releases the GIL while it
inserts, so the flow keeps processing meanwhile.

Guarantees:

* ``drain()`` returns only once everything added before it is flushed: the sink
  calls it from ``snapshot()``, so a snapshot never covers an unwritten row.
* Bounded memory: ``add`` blocks while ``max_pending`` items wait (backpressure
  during a slow or failing flush).
* A flush that raises stops the buffer; the error is raised again by the next
  ``add``, ``drain`` or ``close`` in the caller's thread, so it stops the flow.

>>> got = []
>>> wb = WriteBehind(got.extend, interval_s=0.05, flush_rows=2)
>>> wb.add([1, 2, 3])
>>> wb.drain()
>>> got
[1, 2, 3]
>>> wb.close()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["WriteBehind"]


class WriteBehind(Generic[T]):
    """Buffer items and flush them from one background thread (see the module docstring)."""

    def __init__(
        self,
        flush: Callable[[list[T]], None],
        interval_s: float = 0.2,
        flush_rows: int = 50_000,
        max_pending: int = 200_000,
        name: str = "write-behind",
    ) -> None:
        if interval_s <= 0 or flush_rows < 1 or max_pending < flush_rows:
            raise ValueError(
                f"WriteBehind needs interval_s > 0 ({interval_s}), flush_rows >= 1 ({flush_rows}) "
                f"and max_pending >= flush_rows ({max_pending})"
            )
        self._flush = flush
        self._interval_s = interval_s
        self._flush_rows = flush_rows
        self._max_pending = max_pending
        self._pending: list[T] = []
        self._oldest = 0.0  # monotonic time the oldest pending item arrived
        self._in_flight = 0  # items taken by the thread and not yet flushed
        self._drain_requested = False
        self._closing = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, items: Sequence[T]) -> None:
        """Queue ``items``; blocks while the buffer is full."""
        if not items:
            return
        with self._cond:
            self._raise_error()
            while len(self._pending) + self._in_flight >= self._max_pending and self._error is None:
                self._cond.wait()
            self._raise_error()
            first = not self._pending
            if first:
                self._oldest = time.monotonic()
            self._pending.extend(items)
            if first or len(self._pending) >= self._flush_rows:
                self._cond.notify_all()  # the thread starts the interval's clock, or flushes now

    def drain(self) -> None:
        """Flush everything added so far; returns once it is written (raises if a flush failed)."""
        with self._cond:
            self._drain_requested = True
            self._cond.notify_all()
            while (self._pending or self._in_flight) and self._error is None:
                self._cond.wait()
            self._drain_requested = False
            self._raise_error()

    def close(self) -> None:
        """Drain, then stop the thread."""
        try:
            self.drain()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join()

    @property
    def pending(self) -> int:
        """Items added and not yet flushed."""
        with self._cond:
            return len(self._pending) + self._in_flight

    @property
    def waiting(self) -> int:
        """Items added and not yet taken by a flush (during a flush: those that came after it started)."""
        with self._cond:
            return len(self._pending)

    # -- the background thread ---------------------------------------------------
    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _due(self) -> bool:
        if not self._pending:
            return False
        return (
            self._drain_requested
            or len(self._pending) >= self._flush_rows
            or time.monotonic() - self._oldest >= self._interval_s
        )

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due() and not self._closing:
                    wait = self._interval_s - (time.monotonic() - self._oldest) if self._pending else None
                    self._cond.wait(timeout=wait)
                if not self._pending and self._closing:
                    return
                batch, self._pending = self._pending, []
                self._in_flight = len(batch)
            try:
                self._flush(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                with self._cond:
                    self._error = exc
                    self._in_flight = 0
                    self._cond.notify_all()
                return
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()
