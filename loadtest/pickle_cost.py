"""Benchmark: what an event costs to cross Bytewax processes (pickled on one side, unpickled on the other).

In a cluster every keyed step routes items by key, so about half of them cross
to the other process, and Bytewax pickles each item on its own. This decodes
the load test's traffic (``loadtest.flow_cpu.records``) and times a round trip
(``pickle.dumps`` then ``pickle.loads``) of each ``(state key, Event)`` pair as
the keyed steps send it, twice in one run, alternately: with ``Event``'s own
flat ``__reduce__`` (``creditflow.events``), and with the generic positional
one every other record uses (each nested record pickled as its own class).
It prints microseconds per item (medians of ``--runs``) and the ratio.

    python -m loadtest.pickle_cost --events 20000 --runs 7

>>> r = measure(events=300, runs=1, say=lambda _: None)
>>> r["items"] > 0, r["flat_us"] > 0, r["positional_us"] > 0
(True, True, True)
"""

from __future__ import annotations

import argparse
import copyreg
import io
import json
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from bytewax.testing import TestingSink, TestingSource, run_main

from creditflow.config import TenantConfigs
from creditflow.events import Event
from loadtest.flow_cpu import records
from operators.decode import decode_events
from operators.identity import identity_key


def decoded_items(events: int, seed: int = 1) -> list[tuple[str, Event]]:
    """The load test's traffic decoded, as the ``(state key, event)`` pairs the identity step receives."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow

    flow = Dataflow("pickle_cost")
    configs = TenantConfigs()
    decoded = decode_events("decode", op.input("in", flow, TestingSource(records(events, seed))), configs)
    out: list[Event] = []
    op.output("out", decoded.oks, TestingSink(out))
    run_main(flow)
    key = identity_key(configs)
    return [(key(ev), ev) for ev in out if ev.event_type != "ad_spend"]  # ad spend does not reach the step


_POSITIONAL = attrgetter(*Event.__dataclass_fields__)


def _positional(ev: Event) -> tuple[type[Event], tuple[Any, ...]]:
    return Event, _POSITIONAL(ev)


_FLAT_TABLE = dict(copyreg.dispatch_table)
_POSITIONAL_TABLE = {**copyreg.dispatch_table, Event: _positional}


def _dumper(table: dict[Any, Any]) -> Callable[[Any], bytes]:
    """``pickle.dumps`` with ``table`` as the dispatch table (both encodings pay the same Pickler set-up)."""

    def dumps(obj: Any) -> bytes:
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf)
        pickler.dispatch_table = table
        pickler.dump(obj)
        return buf.getvalue()

    return dumps


_dumps_flat = _dumper(_FLAT_TABLE)
_dumps_positional = _dumper(_POSITIONAL_TABLE)


def _round_trips_s(items: list[Any], dumps: Callable[[Any], bytes]) -> float:
    loads = pickle.loads
    started = time.perf_counter()
    for item in items:
        loads(dumps(item))
    return time.perf_counter() - started


def measure(events: int = 20_000, runs: int = 7, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Median microseconds per round trip of each encoding, alternating runs, and their ratio."""
    items = decoded_items(events)
    for item in items[:50]:  # both encodings must give the event back
        assert pickle.loads(pickle.dumps(item)) == item == pickle.loads(_dumps_positional(item))
    flat: list[float] = []
    positional: list[float] = []
    for i in range(runs):
        flat.append(_round_trips_s(items, _dumps_flat) / len(items) * 1e6)
        positional.append(_round_trips_s(items, _dumps_positional) / len(items) * 1e6)
        say(f"  run {i + 1}/{runs}: flat {flat[-1]:.2f} us, positional {positional[-1]:.2f} us per event")
    f, p = statistics.median(flat), statistics.median(positional)
    sizes = (
        sum(len(_dumps_flat(x)) for x in items) / len(items),
        sum(len(_dumps_positional(x)) for x in items) / len(items),
    )
    return {
        "items": len(items),
        "runs": runs,
        "flat_us": round(f, 2),
        "positional_us": round(p, 2),
        "flat_over_positional": round(f / p, 3),
        "bytes_flat": round(sizes[0]),
        "bytes_positional": round(sizes[1]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.pickle_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args(argv)
    print(f"decoding {args.events:,} events of the load test's traffic")
    r = measure(args.events, args.runs)
    print(
        f"median round trip per event: flat {r['flat_us']} us ({r['bytes_flat']} B), "
        f"positional {r['positional_us']} us ({r['bytes_positional']} B): ratio {r['flat_over_positional']}"
    )
    json.dump(r, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
