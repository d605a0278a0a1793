"""Keyed logics that tell their next wake-up in epoch seconds; Bytewax's ``notify_at`` follows from it.

Sharded state (``operators.sharded``) reads ``notify_at_s`` after every batch of
every key, so the logics compute a float and no ``datetime`` is built there;
Bytewax's own per-key state calls ``notify_at``, which this base derives.

>>> class Alarm(SecondsWake):
...     def notify_at_s(self) -> float | None:
...         return 1767225600.0
>>> Alarm().notify_at()
datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

from datetime import UTC, datetime


class SecondsWake:
    """Base of a logic whose ``notify_at_s`` gives its next wake-up (epoch seconds, ``None``: none)."""

    __slots__ = ()

    def notify_at_s(self) -> float | None:
        raise NotImplementedError

    def notify_at(self) -> datetime | None:
        due = self.notify_at_s()
        return None if due is None else datetime.fromtimestamp(due, tz=UTC)
