"""Benchmark: CPU cost of the flow's own logic per event, without Redis, ClickHouse or snapshots.

Runs the attribution flow in this process (one worker, Bytewax's ``run_main``)
on the load test's traffic (``loadtest.traffic``: the same tenants, persons and
mix as ``creditflow loadtest``) held in memory, into an in-memory sink, several
times, and prints each run and the median: events/s and microseconds per event
of one core. What it leaves out (the Redis read, the ClickHouse insert, the
recovery snapshots) the load test measures; this isolates decode, identity,
journeys, models, de-duplication and windows, so a change to them can be
compared with less noise than a whole load test (run both trees on the same
machine, alternately, and compare medians).

    python -m loadtest.flow_cpu --events 60000 --runs 5 [--json out.json]

>>> r = measure(events=400, runs=1, say=lambda _: None, rate=400)
>>> r["events"], r["runs"], r["rows"] > 0, r["median_events_per_s"] > 0
(400, 1, True, True)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bytewax.testing import TestingSink, TestingSource, run_main

from creditflow.events import RawRecord, SourcePosition
from flows.attribution import FlowSettings, build_flow
from flows.gc_policy import tune_gc, untune_gc
from loadtest.redis_load import python_loop_s
from loadtest.traffic import TrafficSettings, schedule, stamp

READ_BATCH = 400
"""Records per source batch, as the Redis source reads them (``sources.redis_streams.DEFAULT_BATCH``)."""


def records(events: int, seed: int = 1, rate: float = 10_000.0) -> list[RawRecord]:
    """``events`` records of the load test's traffic in publishing order, stamped as if published at ``rate``
    events/s until a second ago (so none is late or in the future). A lower ``rate`` generates smaller cohorts
    of persons (quicker for a few events)."""
    items = sorted(schedule(TrafficSettings(events=events, seed=seed, rate=rate)))
    base = int(time.time() * 1000) - int(items[-1].v * 1000) - 1000 if items else 0
    return [
        RawRecord(stamp(s.template, base + int(s.v * 1000)), SourcePosition("redis", f"p{s.partition}", str(i)), "json")
        for i, s in enumerate(items)
    ]


def run_once(recs: list[RawRecord]) -> tuple[float, int]:
    """Seconds of one in-process run of the flow over ``recs``, and the rows it sank.

    The garbage collector runs as in a flow process (``flows.gc_policy``) for the run, then Python's own comes
    back: with Python's defaults, collections took 10-15% of the time and landed on whichever line allocated.
    """
    out: list[Any] = []
    flow = build_flow(TestingSource(recs, batch_size=READ_BATCH), TestingSink(out), FlowSettings())
    tune_gc()
    try:
        started = time.perf_counter()
        run_main(flow)
        return time.perf_counter() - started, len(out)
    finally:
        untune_gc()


def measure(
    events: int, runs: int, seed: int = 1, say: Callable[[str], None] = print, rate: float = 10_000.0
) -> dict[str, Any]:
    """Median events/s of ``runs`` runs over the same ``events`` records (the first run warms caches too)."""
    say(f"generating {events:,} events of load-test traffic (seed {seed})...")
    recs = records(events, seed, rate)
    seconds: list[float] = []
    rows = 0
    for i in range(runs):
        wall, rows = run_once(recs)
        seconds.append(wall)
        say(f"  run {i + 1}/{runs}: {len(recs) / wall:,.0f} events/s, {wall / len(recs) * 1e6:.1f} us/event")
    median = statistics.median(seconds)
    return {
        "events": len(recs),
        "runs": runs,
        "rows": rows,
        "median_events_per_s": round(len(recs) / median),
        "median_us_per_event": round(median / len(recs) * 1e6, 2),
        "seconds": [round(s, 3) for s in seconds],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=10_000.0, help="events/s the traffic's cohorts are sized for")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    loop_s = python_loop_s()
    print(f"machine: one core runs the calibration loop in {loop_s:.3f} s", file=sys.stderr)
    figures = measure(
        args.events, args.runs, args.seed, say=lambda m: print(m, file=sys.stderr, flush=True), rate=args.rate
    )
    figures["python_loop_s"] = loop_s
    print(
        f"{figures['events']:,} events, median of {figures['runs']}: {figures['median_events_per_s']:,} events/s, "
        f"{figures['median_us_per_event']} us/event (calibration {loop_s:.3f} s)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
