"""Publish a traffic schedule into Redis Streams at a fixed rate, in a process of its own.

    python -m loadtest.publisher --redis redis://127.0.0.1:6379/0 --schedule run.traffic \\
        --streams load0,load1,load2,load3 --events 600000 --rate 10000     # or --rate 0: as fast as possible

Events are read in order from a schedule file (``loadtest/traffic.py``), each
stamped with the wall-clock time of its publication as ``timestamp`` (epoch ms)
and XADDed to the stream of its partition, a chunk of events per command (``XADD_ALL``).
At ``--rate R`` the i-th event is due at ``t0 + i/R`` (``due``); the publisher
sends whatever is due, every ``--tick`` seconds, in chunks of at most ``--pipeline``
entries and sleeps when it is ahead. How far it falls behind that schedule (the publication time
minus the due time of the oldest event in each pipeline) is measured and
reported, so a load test can tell a slow flow from a slow producer.

It writes JSON lines to stdout: ``{"event": "started", "t0": ...}``, a status
``{"event": "status", "t": ..., "published": N, "behind_s": ...}`` every
``--status-every`` seconds (``behind_s``: the worst lag since the last status),
and ``{"event": "done", ...}`` with totals and lag percentiles.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

import redis

from loadtest.measure import percentile
from loadtest.traffic import read_schedule, stamp

DATA_FIELD = b"data"

XADD_ALL = f"""
for i = 1, #KEYS do
  redis.call('XADD', KEYS[i], '*', '{DATA_FIELD.decode()}', ARGV[i])
end
return #KEYS
"""
"""XADDs entry ``i`` (field ``DATA_FIELD``: ``ARGV[i]``) to stream ``KEYS[i]``: a whole chunk in one command.
A pipeline of one XADD per event cost the publisher ~40 us of CPU per event at 10k events/s (0.5 of a core that the flow
under test competes for); this ~1.5 us."""


def due(rate: float, elapsed_s: float, total: int) -> int:
    """How many events a uniform ``rate`` has made due ``elapsed_s`` after the start (at most ``total``).

    Event ``i`` (0-based) is due at ``i / rate``, so one is due at once.

    >>> [due(10.0, t, 100) for t in (0.0, 0.05, 0.1, 0.95, 1.0, 100.0)]
    [1, 1, 2, 10, 11, 100]
    """
    if elapsed_s < 0:
        return 0
    return min(total, math.floor(elapsed_s * rate + 1e-9) + 1)


def due_time(rate: float, index: int) -> float:
    """Seconds after the start at which event ``index`` (0-based) is due.

    >>> due_time(4.0, 10)
    2.5
    """
    return index / rate


@dataclass(frozen=True)
class PublisherSettings:
    redis_url: str
    schedule: Path
    streams: tuple[str, ...]
    events: int
    rate: float = 0.0
    """Events per second; 0 publishes as fast as possible (pre-fill)."""
    pipeline: int = 500
    """Events per command at most."""
    status_every_s: float = 0.2
    tick_s: float = 0.01
    """At a fixed rate, send at most once per tick (unless a whole ``pipeline`` is due): the due events then leave
    together, each stamped with the time it left (so it is at most one tick late, which ``behind_s`` shows)."""


class _Emitter:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: str, **fields: Any) -> None:
        self.out.write(json.dumps({"event": event, **fields}) + "\n")
        self.out.flush()


def publish(s: PublisherSettings, out: IO[str], clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Publish ``s.events`` events of the schedule; returns (and emits) the ``done`` record."""
    emit = _Emitter(out)
    client = redis.Redis.from_url(s.redis_url)
    items: Iterator[tuple[int, bytes]] = read_schedule(s.schedule)
    streams = s.streams
    behind: list[float] = []
    worst_since_status = 0.0
    sent = 0
    t0 = clock()
    wall0 = time.time()
    emit("started", t0=wall0, rate=s.rate, events=s.events)
    next_status = t0 + s.status_every_s
    add_all = client.register_script(XADD_ALL)
    last_send = t0 - s.tick_s
    while sent < s.events:
        now = clock()
        target = due(s.rate, now - t0, s.events) if s.rate > 0 else s.events
        if target <= sent:
            time.sleep(min(0.005, max(0.001, t0 + due_time(s.rate, sent) - now)))  # >= 1 ms: no busy loop
        elif target - sent < s.pipeline and now - last_send < s.tick_s:
            time.sleep(last_send + s.tick_s - now)  # gather a tick's worth: fewer, larger round trips
        else:
            chunk = list(islice(items, min(target - sent, s.pipeline)))
            if not chunk:
                break  # the schedule holds fewer events than asked
            last_send = now
            ts_ms = time.time_ns() // 1_000_000
            add_all(keys=[streams[partition] for partition, _ in chunk], args=[stamp(t, ts_ms) for _, t in chunk])
            if s.rate > 0:
                lag = max(0.0, clock() - (t0 + due_time(s.rate, sent)))
                behind.append(lag)
                worst_since_status = max(worst_since_status, lag)
            sent += len(chunk)
        if clock() >= next_status:
            emit("status", t=time.time(), published=sent, behind_s=round(worst_since_status, 4))
            worst_since_status = 0.0
            next_status += s.status_every_s
    elapsed = clock() - t0
    client.close()
    done = {
        "t": time.time(),
        "t0": wall0,
        "published": sent,
        "elapsed_s": round(elapsed, 3),
        "achieved_rate": round(sent / elapsed, 1) if elapsed > 0 else None,
        "behind_s": _behind_summary(behind),
    }
    emit("done", **done)
    return done


def _behind_summary(behind: Sequence[float]) -> dict[str, float] | None:
    if not behind:
        return None
    return {
        "p50": round(percentile(behind, 50), 4),
        "p99": round(percentile(behind, 99), 4),
        "max": round(max(behind), 4),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.publisher", description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis", required=True, help="redis://HOST:PORT/DB")
    ap.add_argument("--schedule", required=True, type=Path, help="a schedule file of loadtest.traffic")
    ap.add_argument("--streams", required=True, help="comma-separated; partition i goes to the i-th stream")
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = as fast as possible")
    ap.add_argument("--pipeline", type=int, default=500)
    ap.add_argument("--status-every", type=float, default=0.2)
    ap.add_argument("--tick", type=float, default=0.01, help="seconds between sends at a fixed rate")
    args = ap.parse_args(argv)
    settings = PublisherSettings(
        redis_url=args.redis,
        schedule=args.schedule,
        streams=tuple(args.streams.split(",")),
        events=args.events,
        rate=args.rate,
        pipeline=args.pipeline,
        status_every_s=args.status_every,
        tick_s=args.tick,
    )
    publish(settings, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
