"""Benchmark: memory of the journey state per active person (the keyed state of ``attribute.journey``).

Bytewax keeps, per key of a stateful step, the key string and one
``StatefulBatchLogic`` object holding the state, and pickles ``snapshot()`` of
every key that changed into the recovery store. This benchmark does the same
outside a dataflow: it generates ``--persons`` people of seeded traffic
(``sources.generator``, a few touches each with UTMs, campaigns and click ids,
about a quarter converting), turns each event into the flow's own
``PersonEvent`` (JSON -> ``operators.decode.decode_batch`` -> identity ->
``operators.journeys.person_key``) and feeds it to one ``JourneyLogic`` per key,
held in a dict keyed by the very key strings Bytewax uses, calling
``on_batch`` and then ``notify_at`` as Bytewax does, and dropping a key when
the logic asks to be discarded.

Measured:

- ``bytes_per_key``: what the dict of keys and logics holds once the transient
  events are gone, counted with ``tracemalloc`` (every byte Python allocated
  and still holds: the key strings, the dict's table, the logic objects, their
  state and the shared intern tables), divided by the number of keys. A
  generated person has one key per person id it used (anonymous, then
  ``user_id`` after login), so there are more keys than persons.
- ``rss_bytes_per_key``: the process's resident-memory growth over the same
  feed run again without tracemalloc (in a child process: tracemalloc's own
  tables distort RSS), so including allocator rounding and fragmentation.
- ``snapshot_bytes_per_key``: ``len(pickle.dumps(logic.snapshot()))``, what
  Bytewax writes per key into the recovery store (plus the key itself).
- ``cpu``: microseconds per event of ``on_batch`` + ``notify_at`` on
  ``--cpu-persons`` persons' events decoded beforehand (best of three, without
  tracemalloc), and microseconds per ``snapshot()`` + ``pickle.dumps``.
- ``bytewax_bytes_per_key``: what Bytewax itself holds per key outside
  Python's allocator (its Rust maps: the key in two ``BTreeMap``\\ s, the
  next ``notify_at``), the marginal RSS of a real ``stateful_batch`` step with
  a logic that holds nothing (``--bytewax-keys``, separate processes). With
  ``logic_and_state_bytes_per_key`` it estimates what one active person costs
  the process in the running flow.

    python -m loadtest.state_memory --persons 1000000    # ~15 min with tracemalloc; figures in loadtest/out/
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.testing import TestingSink, TestingSource, run_main

from creditflow.config import TenantConfig, TenantConfigs
from creditflow.events import PERSON_EVENT_TYPES, Event, PersonEvent, RawRecord, SourcePosition
from creditflow.kpis import KEY_SEP
from creditflow.weights import NoWeights
from operators.decode import decode_batch
from operators.journeys import person_key
from sources.generator import DAY_MS, DEFAULT_START_MS, DEFAULT_TENANTS

# The generator's per-person journeys, one person at a time: ``generate_events`` would
# build (and sort) all of 1M persons' events at once (~5 GB).
from sources.generator import _person_events as _generated_person
from sources.generator import _plan as _generator_plan
from state.device_graph import device_person_of
from state.journeys import JourneyEnv, JourneyLogic

OUT = Path(__file__).parent / "out"
BOUND_BYTES = 500
"""Target of the load-test issue: at most this many bytes of state per active person (key)."""

DAYS = 7.0


def default_configs() -> TenantConfigs:
    """The demo's tenants; ``acme`` (most persons) with view-through, so its impressions are kept as touches."""
    return TenantConfigs(tenants={"acme": TenantConfig(view_through=True, own_domains=("acme.com",))})


def person_events(seed: int, persons: range, configs: TenantConfigs) -> Iterator[PersonEvent]:
    """The flow's ``PersonEvent``\\ s of generated persons, person by person, each person's in event-time order."""
    plan = _generator_plan(seed, persons.stop, DEFAULT_TENANTS, DEFAULT_START_MS, DAYS)
    now_ms = plan.end_ms + DAY_MS
    for person in persons:
        raw = sorted(_generated_person(plan, person), key=lambda e: (e["timestamp"], e["event_id"]))
        records = [
            RawRecord(orjson.dumps(ev), SourcePosition("generator", "0", f"{person}:{i}")) for i, ev in enumerate(raw)
        ]
        for ev in decode_batch(records, configs, lambda: now_ms):
            if isinstance(ev, Event) and ev.event_type in PERSON_EVENT_TYPES:
                yield PersonEvent(_journey_person(ev), ev)


def _journey_person(ev: Event) -> str:
    """The journey key without the device graph: the user once named, else the device (one key per id)."""
    return "u:" + ev.user_id if ev.user_id else device_person_of(ev)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Feed:
    """One logic per key, exactly as Bytewax's ``stateful_batch`` keeps them."""

    build: Callable[[], JourneyLogic]
    logics: dict[str, JourneyLogic]
    events: int = 0
    discarded: int = 0

    def apply(self, pe: PersonEvent) -> None:
        key = person_key(pe)
        lg = self.logics.get(key)
        if lg is None:
            lg = self.logics[key] = self.build()
        _, discard = lg.on_batch([pe])
        self.events += 1
        if discard:
            del self.logics[key]
            self.discarded += 1
        else:
            lg.notify_at()


def _builder(configs: TenantConfigs) -> Callable[[], JourneyLogic]:
    env = JourneyEnv(configs, NoWeights(), time.time)
    # The flow's builder (operators.journeys.attribute) with a fresh start: no resume state.
    return lambda: JourneyLogic(env, None)


def measure_memory(
    seed: int, persons: int, configs: TenantConfigs, use_tracemalloc: bool = True, progress: bool = True
) -> dict[str, Any]:
    """Feed ``persons`` generated persons into one logic per key; bytes held per key and per snapshot."""
    gc.collect()
    rss0 = _rss_bytes()
    was_tracing = tracemalloc.is_tracing()
    if use_tracemalloc and not was_tracing:
        tracemalloc.start()
    traced0 = tracemalloc.get_traced_memory()[0] if use_tracemalloc else 0
    feed = Feed(_builder(configs), {})
    t0 = time.perf_counter()
    step = max(1, persons // 20)
    for start in range(0, persons, step):
        for pe in person_events(seed, range(start, min(persons, start + step)), configs):
            feed.apply(pe)
        if progress:
            done = min(persons, start + step)
            print(
                f"  {done:>9,} persons, {feed.events:>10,} events, {len(feed.logics):>9,} keys, "
                f"{time.perf_counter() - t0:6.1f} s",
                file=sys.stderr,
                flush=True,
            )
    gc.collect()
    keys = len(feed.logics)
    traced = tracemalloc.get_traced_memory()[0] - traced0 if use_tracemalloc else None
    rss = None if use_tracemalloc else _rss_bytes() - rss0
    if use_tracemalloc and not was_tracing:
        tracemalloc.stop()
    key_bytes = sum(sys.getsizeof(k) for k in feed.logics)
    table_bytes = sys.getsizeof(feed.logics)

    t1 = time.perf_counter()
    snap_bytes = 0
    for lg in feed.logics.values():
        snap_bytes += len(pickle.dumps(lg.snapshot()))
    snap_s = time.perf_counter() - t1
    key_utf8 = sum(len(k.encode()) for k in feed.logics)
    touches = sum(_touch_count(lg) for lg in feed.logics.values())

    result: dict[str, Any] = {
        "persons": persons,
        "events": feed.events,
        "keys": keys,
        "keys_discarded": feed.discarded,
        "touches_held": touches,
        "touches_per_key": round(touches / max(keys, 1), 2),
        "feed_s": round(time.perf_counter() - t0 - snap_s, 1),
        "key_str_bytes_per_key": round(key_bytes / max(keys, 1), 1),
        "dict_table_bytes_per_key": round(table_bytes / max(keys, 1), 1),
        "rss_bytes_per_key": None if rss is None else round(rss / max(keys, 1), 1),
        "snapshot_bytes_per_key": round(snap_bytes / max(keys, 1), 1),
        "snapshot_key_utf8_bytes_per_key": round(key_utf8 / max(keys, 1), 1),
        "snapshot_us_per_key": round(snap_s / max(keys, 1) * 1e6, 2),
    }
    if traced is not None:
        result["bytes_per_key"] = round(traced / keys, 1) if keys else 0.0
        result["logic_and_state_bytes_per_key"] = round((traced - key_bytes - table_bytes) / max(keys, 1), 1)
    del feed
    gc.collect()
    return result


def measure_rss(seed: int, persons: int) -> float:
    """``rss_bytes_per_key`` of the same feed without tracemalloc, in a fresh child process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rss.json"
        cmd = [sys.executable, "-m", "loadtest.state_memory", "--persons", str(persons), "--seed", str(seed)]
        cmd += ["--no-tracemalloc", "--cpu-persons", "0", "--bytewax-keys", "0", "--json", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return float(json.loads(out.read_text())["memory"]["rss_bytes_per_key"])


def _touch_count(lg: JourneyLogic) -> int:
    return len(lg.state.touches)


def measure_cpu(seed: int, persons: int, configs: TenantConfigs, repeats: int = 3) -> dict[str, float]:
    """Microseconds per event of the journey logic alone (events decoded beforehand), best of ``repeats``."""
    events = list(person_events(seed, range(persons), configs))
    keys = [person_key(pe) for pe in events]
    build = _builder(configs)
    gc.collect()
    gc.freeze()  # the prepared events are not the logic's garbage to collect
    best_feed = best_snap = float("inf")
    for _ in range(repeats):
        logics: dict[str, JourneyLogic] = {}
        gc.collect()
        t0 = time.perf_counter()
        for key, pe in zip(keys, events, strict=True):
            lg = logics.get(key)
            if lg is None:
                lg = logics[key] = build()
            lg.on_batch([pe])
            lg.notify_at()
        best_feed = min(best_feed, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for lg in logics.values():
            pickle.dumps(lg.snapshot())
        best_snap = min(best_snap, (time.perf_counter() - t0) / max(len(logics), 1))
    n_events = len(events)
    del events, keys
    gc.unfreeze()
    return {
        "cpu_persons": persons,
        "cpu_events": n_events,
        "us_per_event": round(best_feed / max(n_events, 1) * 1e6, 2),
        "us_per_snapshot": round(best_snap * 1e6, 2),
    }


class _EmptyLogic:
    """A logic holding nothing, rescheduled like a journey: what remains per key is Bytewax's own."""

    __slots__ = ()
    _FAR = datetime(2100, 1, 1, tzinfo=UTC)

    def on_batch(self, values: list[str]) -> tuple[list[str], bool]:
        return [], False

    def on_notify(self) -> tuple[list[str], bool]:
        return [], False

    def on_eof(self) -> tuple[list[str], bool]:
        _PROBE.setdefault("rss_at_eof", _rss_bytes())  # the first key's EOF: every key is still held
        return [], False

    def notify_at(self) -> datetime | None:
        return self._FAR if _PROBE["notify"] else None

    def snapshot(self) -> None:
        return None


StatefulBatchLogic.register(_EmptyLogic)
_PROBE: dict[str, Any] = {}


def _probe_bytewax(keys: int, notify: bool) -> int:
    """RSS growth of a real ``stateful_batch`` step holding ``keys`` keys of empty logic (run in a fresh process)."""
    _PROBE.update(notify=notify)
    flow = Dataflow("state_memory_probe")
    names = (f"acme{KEY_SEP}a:anon-{i:020x}" for i in range(keys))  # as long as the flow's keys
    keyed = op.key_on("key", op.input("in", flow, TestingSource(names, batch_size=1000)), lambda k: k)
    build: Callable[[None], Any] = lambda resume: _EmptyLogic()  # noqa: E731 (a virtual StatefulBatchLogic)
    op.output("out", op.stateful_batch("state", keyed, build), TestingSink([]))
    gc.collect()
    rss0 = _rss_bytes()
    run_main(flow, epoch_interval=timedelta(milliseconds=50))
    return int(_PROBE["rss_at_eof"]) - rss0


def measure_bytewax_keys(keys: int) -> dict[str, float]:
    """Bytes per key that Bytewax itself holds (Rust maps: the key twice, the next ``notify_at``), from RSS.

    The marginal RSS between ``keys`` and ``3 * keys`` keys of a logic holding
    nothing, each run in a fresh process, less that empty logic object
    (``sys.getsizeof``); includes allocator overhead.
    """

    def run(n: int, notify: bool) -> int:
        cmd = [sys.executable, "-m", "loadtest.state_memory", "--bytewax-probe", str(n)]
        if not notify:
            cmd.append("--no-notify")
        return int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])

    out: dict[str, float] = {"bytewax_probe_keys": 3 * keys}
    for notify in (True, False):
        per_key = (run(3 * keys, notify) - run(keys, notify)) / (2 * keys) - sys.getsizeof(_EmptyLogic())
        out["bytewax_bytes_per_key" + ("" if notify else "_without_notify_at")] = round(per_key, 1)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cpu-persons", type=int, default=50_000, help="persons for the CPU timing (0: skip)")
    ap.add_argument("--no-tracemalloc", action="store_true", help="RSS only (faster)")
    ap.add_argument("--no-rss", action="store_true", help="skip the second feed (RSS without tracemalloc)")
    ap.add_argument(
        "--bytewax-keys", type=int, default=100_000, help="keys for the Bytewax-internals probe, x1 and x3 (0: skip)"
    )
    ap.add_argument("--json", type=Path, default=OUT / "state_memory.json", help="write the figures here")
    ap.add_argument("--bytewax-probe", type=int, help=argparse.SUPPRESS)  # one probe run, in a child process
    ap.add_argument("--no-notify", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.bytewax_probe is not None:
        print(_probe_bytewax(args.bytewax_probe, notify=not args.no_notify))
        return {}
    configs = default_configs()

    result: dict[str, Any] = {"bound_bytes_per_key": BOUND_BYTES}
    print(f"memory: {args.persons:,} persons (seed {args.seed})...", file=sys.stderr, flush=True)
    result["memory"] = measure_memory(args.seed, args.persons, configs, use_tracemalloc=not args.no_tracemalloc)
    if result["memory"]["rss_bytes_per_key"] is None and not args.no_rss:
        print("memory: the same without tracemalloc, for RSS...", file=sys.stderr, flush=True)
        result["memory"]["rss_bytes_per_key"] = measure_rss(args.seed, args.persons)
    if args.cpu_persons:  # after the memory run, whose RSS baseline must not contain freed memory
        print(f"CPU: journey logic on {args.cpu_persons:,} persons' events...", file=sys.stderr, flush=True)
        result["cpu"] = measure_cpu(args.seed, args.cpu_persons, configs)
    if args.bytewax_keys:
        print(f"Bytewax's own memory per key ({args.bytewax_keys:,} and x3 keys)...", file=sys.stderr, flush=True)
        result["bytewax"] = measure_bytewax_keys(args.bytewax_keys)

    m = result["memory"]
    rows = [
        ("persons / events / keys", f"{m['persons']:,} / {m['events']:,} / {m['keys']:,}"),
        ("touches held per key", m["touches_per_key"]),
        ("bytes per key (tracemalloc, all)", m.get("bytes_per_key", "-")),
        ("  of which key string", m["key_str_bytes_per_key"]),
        ("  of which dict table", m["dict_table_bytes_per_key"]),
        ("  of which logic + state", m.get("logic_and_state_bytes_per_key", "-")),
        ("RSS growth per key (without tracemalloc)", m["rss_bytes_per_key"] or "-"),
        ("snapshot pickle bytes per key", m["snapshot_bytes_per_key"]),
        ("snapshot + pickle us per key", m["snapshot_us_per_key"]),
    ]
    if "cpu" in result:
        rows.append(("on_batch + notify_at us per event", result["cpu"]["us_per_event"]))
    if "bytewax" in result and "logic_and_state_bytes_per_key" in m:
        bw = result["bytewax"]["bytewax_bytes_per_key"]
        rows.append(("Bytewax's own maps per key (RSS probe)", bw))
        rows.append(("logic + state + Bytewax's maps per key", round(m["logic_and_state_bytes_per_key"] + bw, 1)))
    width = max(len(r[0]) for r in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    per_key = m.get("bytes_per_key", m["rss_bytes_per_key"])
    print(f"bound {BOUND_BYTES} B per key: {'met' if per_key <= BOUND_BYTES else 'NOT met'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.json}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
