"""SIGTERM and SIGINT as an exception, so a parent process cleans up after its children before it leaves.

Python ends on SIGTERM without running ``finally`` blocks. A process that started
others (the cluster launcher of ``creditflow run --processes N``, the load test
with its flow, publisher and redis-server) then left them running, orphaned. Inside
``stop_signals_raise()`` both signals raise ``StopRequested`` instead, which
unwinds through the ``finally`` blocks like ``KeyboardInterrupt`` does.

>>> import os, signal
>>> try:
...     with stop_signals_raise():
...         os.kill(os.getpid(), signal.SIGTERM)
...         raise AssertionError("not reached: the handler raised")
... except StopRequested as stop:
...     stop.signum == signal.SIGTERM, stop.exit_code
(True, 143)
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["StopRequested", "stop_signals_raise"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(Exception):
    """The process got SIGTERM or SIGINT (``signum``) inside ``stop_signals_raise()``."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped on {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process ended by it."""
        return 128 + self.signum


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While inside, SIGTERM and SIGINT raise ``StopRequested``; the previous handlers come back after.

    Only the main thread can set handlers: elsewhere it changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        raise StopRequested(signum)

    before = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
