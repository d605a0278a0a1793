"""How a flow process runs Python's cycle collector: young objects only, survivors frozen.

Python's default (700, 10, 10) collects every 700 net allocations and, every
70,000, walks every live object: measured 10-15% of the flow's time, and the
flow holds millions of objects (journeys, device graphs, networks). Rarer
collections (50,000) took that cost away but not the pauses: a generation-1
collection, once a minute, walked the minute's survivors and paused the worker
0.85 s at 5k events/s (the p99 latency peaks of the load test).

So every collection is young: it walks what was allocated since the previous
one (``GC_THRESHOLDS``), and a callback then freezes the survivors
(``gc.freeze``), which moves them out of every generation. No collection ever
walks the long-lived state again, and nothing is copied. Frozen objects are
still freed by reference counting when they die; what freezing gives up is
collecting a *cycle* that is alive at one collection (about 50,000 allocations
after it was made) and dies later. The flow's state holds no cycles,
and the sink breaks clickhouse-connect's per-insert one
(``sinks.clickhouse_client.insert_rows``); ``tests/flows/test_gc_policy.py``
runs the whole flow under Python's own collector and checks that it makes no
garbage cycles per event.

Until 2026-11-24 the survivors of a young collection were kept for one more
(generation 1) before being frozen: each long-lived object was walked twice,
and a walk is memory-bound (each reference read from a young object touches its
target, mostly old and out of cache). Freezing after every collection cut the
collector's time in ``loadtest.flow_cpu`` from 6.6% to 4.7% of the run (medians
of four runs each, alternated in one process).

>>> tune_gc(); gc.get_threshold() == GC_THRESHOLDS
True
>>> untune_gc(); gc.get_freeze_count()
0
"""

from __future__ import annotations

import gc
from typing import Any

GC_THRESHOLDS = (50_000, 1_000, 1_000)
"""A collection after 50,000 net allocations, after which the survivors are frozen. Generations 1 and 2 hold
nothing unfrozen, so their rare collections (every 1,000 of the one below) are as cheap as a young one.

Measured in the 10k load test (2026-11-24, timed by a gc callback): 46 collections in 65 s, 30-75 ms each,
2.3% of the worker's time. With 1,000,000 there were two, of 0.54 and 0.64 s: 1.8% of the time, but each
a pause the p99 latency target cannot absorb."""

_SAVED: list[tuple[int, ...]] = []


def tune_gc() -> None:
    """Freeze what start-up allocated, collect only young objects, freeze each collection's survivors."""
    gc.collect()
    gc.freeze()
    if not _SAVED:
        _SAVED.append(gc.get_threshold())
    gc.set_threshold(*GC_THRESHOLDS)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def untune_gc() -> None:
    """Python's own collector back (thresholds before ``tune_gc``, nothing frozen): for benchmarks run in-process."""
    if _freeze_survivors in gc.callbacks:
        gc.callbacks.remove(_freeze_survivors)
    gc.unfreeze()
    if _SAVED:
        gc.set_threshold(*_SAVED.pop())


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop":
        gc.freeze()  # the collection is over: its survivors leave the generations for good
