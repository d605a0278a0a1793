"""Live multi-tenant traffic for the load test: an ordered event schedule at a uniform rate.

``schedule(settings)`` yields ``settings.events`` events as ``Scheduled(v,
partition, template)``, in the order they are to be published; the publisher
(``loadtest/publisher.py``) sends them at a fixed rate and writes each event's
``timestamp`` the moment it publishes it (``stamp``), so event time is publish
time, as for live traffic, and the rate is uniform whatever the schedule's shape.

Where the events come from (``sources/generator.py``, reused as it is):

- Every second of the run (virtual time ``v``) a *cohort* of new persons
  starts: ``generate_partitioned_events`` with a seed of its own, ad spend
  dropped. Each person's journey of impressions, clicks, page views with UTMs,
  identifies and conversions, generated over 7 days, plays out over
  ``journey_s`` seconds of the run. Cohorts also start ``journey_s`` seconds
  *before* the run and only their events from ``v >= 0`` are kept, so the mix
  of first touches and conversions is the same from the first second on (a
  live system is observed, not started). Conversion ids get the cohort in
  them (the generator numbers them per person index, the same in every cohort).
- Tenants are skewed as the generator makes them: shares ``1/(i+1)**1.5``
  (Zipf-like), first tenant most (``zipf_shares``).
- Partitions (Redis streams): by default each event goes to the partition of
  its device, ``operators.routing.partition_of``, as a producer following our
  docs would write it, so with P processes dividing the partitions a device's
  events are read in the process holding its state. ``partition_by="person"``
  keeps the generator's partition instead, a stable hash of the person (all
  of a person's devices on one stream, unaligned with the flow's state).
- Ad spend: every ``spend_every_s`` one report per tenant x paid campaign (the
  generator's hourly reports, one per slot), on the partition of its campaign.
- ``bad_fraction`` of the events are followed by a deliberately broken copy
  (``serialize_events``): dead letters, as real traffic has.

Cohorts are sized for ``rate`` so that virtual time runs about as fast as the
clock; memory holds only the ``journey_s`` cohorts in play (about
``rate * journey_s / 2`` events).

    python -m loadtest.traffic OUT.traffic --events 10000     # write a schedule file, print its summary
"""

from __future__ import annotations

import argparse
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson

from operators.routing import partition_of
from sources.generator import generate_partitioned_events, serialize_events

LOAD_TENANTS: tuple[str, ...] = ("acme", "globex", "initech", "umbrella")
GENERATED_DAYS = 7.0
"""Journeys are generated over this many days, then compressed into ``journey_s`` seconds."""
PERSON_EVENTS = 3.66
"""Mean events per generated person (measured on the generator: touches, identifies, conversions)."""
TS_MARK = b'"timestamp":9999999999999'
"""The ``timestamp`` of a template; ``stamp`` replaces it (13 digits, like epoch ms now)."""
_TS_PLACEHOLDER = 9_999_999_999_999
_DAY_MS = 86_400_000


class Scheduled(NamedTuple):
    v: float
    """Virtual time in the run (s); only the order matters to the publisher."""
    partition: int
    template: bytes
    """JSON with ``TS_MARK`` where the timestamp goes."""


@dataclass(frozen=True)
class TrafficSettings:
    events: int
    """How many records the schedule yields (bad copies included)."""
    rate: float = 10_000.0
    """Events per second the cohorts are sized for."""
    partitions: int = 4
    tenants: tuple[str, ...] = LOAD_TENANTS
    seed: int = 1
    journey_s: float = 30.0
    """Seconds of the run over which one person's (7 generated days of) journey plays out."""
    spend_every_s: float = 5.0
    bad_fraction: float = 0.001
    partition_by: Literal["device", "person"] = "device"
    """``device``: ``operators.routing.partition_of`` (aligned with the flow's state); ``person``: the generator's."""

    def __post_init__(self) -> None:
        if self.events < 0 or self.rate <= 0 or self.partitions < 1 or self.journey_s <= 0:
            raise ValueError(f"events >= 0, rate > 0, partitions >= 1 and journey_s > 0 needed (got {self})")
        if self.spend_every_s <= 0 or not 0.0 <= self.bad_fraction <= 1.0:
            raise ValueError(f"spend_every_s > 0 and 0 <= bad_fraction <= 1 needed (got {self})")
        if self.partition_by not in ("device", "person"):
            raise ValueError(f"partition_by must be 'device' or 'person' (got {self.partition_by!r})")

    @property
    def persons_per_cohort(self) -> int:
        return max(1, round(self.rate / PERSON_EVENTS))


def zipf_shares(n: int, exponent: float = 1.5) -> list[float]:
    """Tenant shares of persons as the generator draws them (tenant i: ``1/(i+1)**exponent``, normalised).

    >>> [round(s, 3) for s in zipf_shares(4)]
    [0.598, 0.212, 0.115, 0.075]
    """
    raw = [1 / (i + 1) ** exponent for i in range(n)]
    return [w / sum(raw) for w in raw]


def stamp(template: bytes, ts_ms: int) -> bytes:
    """The template with its timestamp set to ``ts_ms`` (epoch ms).

    >>> stamp(b'{"a":1,' + TS_MARK + b'}', 1767225600000)
    b'{"a":1,"timestamp":1767225600000}'
    """
    return template.replace(TS_MARK, b'"timestamp":%d' % ts_ms, 1)


def _cohort_seed(seed: int, cohort: int) -> int:
    return zlib.crc32(f"loadtest:{seed}:{cohort}".encode())


def _templates(events: Iterable[dict[str, Any]], bad_fraction: float) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Each event with its template(s): the event, then maybe its broken copy (``serialize_events``)."""
    for ev in events:
        for payload in serialize_events([{**ev, "timestamp": _TS_PLACEHOLDER}], bad_fraction):
            yield ev, bytes(memoryview(payload))  # orjson results over-allocate; keep compact copies


def cohort_events(s: TrafficSettings, cohort: int) -> list[Scheduled]:
    """The person events of the cohort starting at second ``cohort`` (may be negative), unsorted."""
    parts = generate_partitioned_events(
        _cohort_seed(s.seed, cohort), s.persons_per_cohort, s.partitions, s.tenants, start_ms=0, days=GENERATED_DAYS
    )
    scale = s.journey_s / (GENERATED_DAYS * _DAY_MS)
    out: list[Scheduled] = []
    for partition, events in enumerate(parts):
        people = (e for e in events if e["event_type"] != "ad_spend")
        for ev, template in _templates(map(_with_cohort_ids(cohort), people), s.bad_fraction):
            where = partition if s.partition_by == "person" else device_partition(ev, s.partitions)
            out.append(Scheduled(cohort + ev["timestamp"] * scale, where, template))
    return out


def device_partition(ev: dict[str, Any], partitions: int) -> int:
    """The partition of a generated event's device (``operators.routing.partition_of``)."""
    return partition_of(
        ev["tenant_id"],
        partitions,
        device_id=ev.get("device_id") or "",
        anonymous_id=ev.get("anonymous_id") or "",
        user_id=ev.get("user_id") or "",
    )


def _with_cohort_ids(cohort: int) -> Any:
    tag = f"ord-c{cohort}-"

    def rewrite(ev: dict[str, Any]) -> dict[str, Any]:
        conv = ev.get("conversion")
        if conv is not None:
            return {**ev, "conversion": {**conv, "conversion_id": conv["conversion_id"].replace("ord-", tag, 1)}}
        return ev

    return rewrite


def spend_events(s: TrafficSettings, slots: int) -> list[Scheduled]:
    """Ad-spend reports: slot ``h`` (at ``h * spend_every_s``) has one per tenant x paid campaign.

    The generator's hourly reports of zero persons give the ids, campaigns and
    partitions; their metrics are sized here for ``rate`` (the generator's are
    sized for its persons).
    """
    parts = generate_partitioned_events(
        _cohort_seed(s.seed, -1_000_000), 0, s.partitions, s.tenants, start_ms=0, days=slots / 24
    )
    shares = dict(zip(s.tenants, zipf_shares(len(s.tenants)), strict=True))
    out: list[Scheduled] = []
    for partition, events in enumerate(parts):
        for ev in events:
            slot = ev["timestamp"] // 3_600_000
            # impressions reported per slot: 1-7 times the tenant's share of the slot's events
            imps = int(
                s.rate * shares[ev["tenant_id"]] * s.spend_every_s * (1 + zlib.crc32(ev["event_id"].encode()) % 7)
            )
            clicks = imps // 40
            metrics = {"impressions": imps, "clicks": clicks, "cost": round(clicks * 0.9 + imps * 0.002, 2)}
            ev = {**ev, "metrics": metrics, "metadata": {**ev["metadata"], "interval_ms": int(s.spend_every_s * 1000)}}
            for _, template in _templates([ev], 0.0):
                out.append(Scheduled(slot * s.spend_every_s, partition, template))
    return out


def schedule(s: TrafficSettings) -> Iterator[Scheduled]:
    """``s.events`` records in publishing order (by virtual time); see the module docstring."""
    if s.events == 0:
        return
    span_s = s.events / s.rate + s.journey_s  # virtual time the run can reach, with room to spare
    spend = sorted(spend_events(s, math.ceil(span_s / s.spend_every_s) + 1))
    slices: dict[int, list[Scheduled]] = {}
    for item in spend:
        slices.setdefault(int(item.v), []).append(item)
    next_cohort = -math.ceil(s.journey_s)
    emitted = 0
    second = 0
    while True:
        while next_cohort <= second:  # a cohort's events all lie at or after its start
            for item in cohort_events(s, next_cohort):
                if item.v >= 0:
                    slices.setdefault(int(item.v), []).append(item)
            next_cohort += 1
        for item in sorted(slices.pop(second, [])):
            yield item
            emitted += 1
            if emitted >= s.events:
                return
        second += 1


@dataclass
class TrafficSummary:
    """What a schedule holds (for the report)."""

    events: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    by_tenant: Counter[str] = field(default_factory=Counter)
    by_partition: Counter[int] = field(default_factory=Counter)
    persons: int = 0
    bad_records: int = 0

    def add(self, item: Scheduled, persons: set[str]) -> None:
        self.events += 1
        self.by_partition[item.partition] += 1
        try:
            ev = orjson.loads(item.template)
        except orjson.JSONDecodeError:
            self.bad_records += 1
            return
        if not isinstance(ev.get("timestamp"), int) or "tenant_id" not in ev:
            self.bad_records += 1
            return
        self.by_type[ev.get("event_type", "?")] += 1
        self.by_tenant[ev["tenant_id"]] += 1
        who = ev.get("user_id") or ev.get("device_id") or ev.get("anonymous_id")
        if who:
            persons.add(who)

    def as_dict(self) -> dict[str, Any]:
        good = sum(self.by_tenant.values()) or 1
        return {
            "events": self.events,
            "bad_records": self.bad_records,
            "persons": self.persons,
            "by_type": dict(self.by_type.most_common()),
            "by_partition": {str(k): v for k, v in sorted(self.by_partition.items())},
            "tenant_shares": {t: round(n / good, 4) for t, n in self.by_tenant.most_common()},
        }


def summarize(items: Iterable[Scheduled]) -> TrafficSummary:
    summary = TrafficSummary()
    persons: set[str] = set()
    for item in items:
        summary.add(item, persons)
    summary.persons = len(persons)
    return summary


def write_schedule(s: TrafficSettings, path: Path) -> TrafficSummary:
    """Write the schedule as lines ``<partition> <template>``; returns its summary."""
    summary = TrafficSummary()
    persons: set[str] = set()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for item in schedule(s):
            fh.write(b"%d %s\n" % (item.partition, item.template))
            summary.add(item, persons)
    summary.persons = len(persons)
    return summary


def read_schedule(path: Path) -> Iterator[tuple[int, bytes]]:
    """The ``(partition, template)`` lines of a schedule file, in order."""
    with path.open("rb") as fh:
        for line in fh:
            partition, _, template = line.rstrip(b"\n").partition(b" ")
            yield int(partition), template


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.traffic", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=10_000.0)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    s = TrafficSettings(events=args.events, rate=args.rate, partitions=args.partitions, seed=args.seed)
    print(orjson.dumps(write_schedule(s, args.out).as_dict(), option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
