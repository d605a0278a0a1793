"""generate_events, serialize_events, write_jsonl and GeneratorSource."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from creditflow.events import CLICK_ID_NAMES, EVENT_TYPES, RawRecord
from sources import SourceError
from sources.files import FileSource
from sources.generator import DEFAULT_START_MS, GeneratorSource, generate_events, serialize_events, write_jsonl

N = 3000


@pytest.fixture(scope="module")
def evs() -> list[dict[str, Any]]:
    return list(generate_events(seed=42, n_persons=N))


def drain(part: Any) -> list[RawRecord]:
    out: list[RawRecord] = []
    while True:
        try:
            out.extend(part.next_batch())
        except StopIteration:
            return out


def test_same_seed_same_events_other_seed_other_events(evs: list[dict[str, Any]]) -> None:
    assert list(generate_events(seed=42, n_persons=N)) == evs
    other = list(generate_events(seed=43, n_persons=N))
    assert other != evs
    assert not {e["event_id"] for e in other} & {e["event_id"] for e in evs}


def test_sorted_by_timestamp_within_the_period(evs: list[dict[str, Any]]) -> None:
    ts = [e["timestamp"] for e in evs]
    assert ts == sorted(ts)
    assert all(isinstance(t, int) for t in ts)
    assert DEFAULT_START_MS <= ts[0] and ts[-1] < DEFAULT_START_MS + 7 * 86_400_000


def test_event_ids_unique_and_types_known(evs: list[dict[str, Any]]) -> None:
    assert len({e["event_id"] for e in evs}) == len(evs)
    assert {e["event_type"] for e in evs} <= EVENT_TYPES
    assert {"impression", "click", "page_view", "conversion", "ad_spend"} <= {e["event_type"] for e in evs}


def test_ad_spend_every_hour_per_campaign_with_impressions_at_least_clicks(evs: list[dict[str, Any]]) -> None:
    spend = [e for e in evs if e["event_type"] == "ad_spend"]
    series: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for e in spend:
        m = e["metrics"]
        assert m["impressions"] >= m["clicks"] >= 0 and m["cost"] >= 0
        assert e["channel"] in {"paid_search", "paid_social", "display", "affiliate"}
        series[(e["tenant_id"], e["campaign_id"])].append(e["timestamp"])
    assert {t for t, _ in series} == {"acme", "globex", "initech"}
    for hours in series.values():
        assert hours == [DEFAULT_START_MS + h * 3_600_000 for h in range(7 * 24)]
    assert sum(e["metrics"]["cost"] for e in spend) > 0


def test_persons_tenants_and_conversions_look_real(evs: list[dict[str, Any]]) -> None:
    people = [e for e in evs if e["event_type"] not in ("ad_spend",)]
    assert all(e["anonymous_id"] for e in people)
    assert any("device_id" in e for e in people) and any("user_id" in e for e in people)
    tenants = Counter(e["tenant_id"] for e in people)
    assert tenants["acme"] > tenants["globex"] > tenants["initech"] > 0  # skewed: the first tenant gets most

    conversions = [e for e in evs if e["event_type"] == "conversion"]
    converters = Counter(e["conversion"]["conversion_id"].split("-")[1] for e in conversions)
    assert 0.15 <= len(converters) / N <= 0.35
    assert any(n == 2 for n in converters.values())  # some convert twice
    ids_per_tenant = Counter((e["tenant_id"], e["conversion"]["conversion_id"]) for e in conversions)
    assert max(ids_per_tenant.values()) == 1
    for e in conversions:
        c = e["conversion"]
        assert 10 <= c["value"] <= 500 and c["currency"] in {"EUR", "USD"}

    clicks = [e for e in evs if e["event_type"] == "click"]
    click_ids = {k for e in clicks for k in e.get("click_ids", {})}
    assert click_ids == {"gclid", "fbclid", "ttclid", "msclkid"} and click_ids <= set(CLICK_ID_NAMES)
    mediums = {e["utm"]["medium"] for e in clicks if "utm" in e}
    assert {"cpc", "paid_social", "email", "display", "cpm", "affiliate"} <= mediums
    referrers = {e.get("referrer", "") for e in evs if e["event_type"] == "page_view"}
    assert {"https://www.google.com/", "https://t.co/", ""} <= referrers


def test_channels_differ_in_how_often_journeys_convert() -> None:
    """Journeys with a brand-search click convert far more often than impression-only ones."""
    evs = list(generate_events(seed=5, n_persons=8000))
    people = [e for e in evs if e["event_type"] != "ad_spend"]
    user_of = {e["anonymous_id"]: e["user_id"] for e in people if "user_id" in e}  # stitch devices
    journeys: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    converted: set[str] = set()
    for e in people:
        person = user_of.get(e["anonymous_id"], e["anonymous_id"])
        if e["event_type"] == "conversion":
            converted.add(person)
        else:
            journeys[person].append(e)

    def rate(pred: Any) -> float:
        group = [p for p, touches in journeys.items() if pred(touches)]
        return sum(p in converted for p in group) / len(group)

    brand = rate(lambda ts: any(t.get("campaign_id", "").endswith("search-brand") for t in ts))
    impressions_only = rate(lambda ts: all(t["event_type"] in ("impression", "identify") for t in ts))
    email = rate(lambda ts: any(t.get("utm", {}).get("medium") == "email" for t in ts))
    assert brand > 2 * impressions_only and email > 2 * impressions_only


def test_generator_partitions_emit_exactly_generate_events() -> None:
    expected = list(generate_events(seed=9, n_persons=600, days=2))
    src = GeneratorSource(seed=9, n_persons=600, partitions=3, days=2, batch_size=97)
    assert src.list_parts() == ["gen#0", "gen#1", "gen#2"]
    seen: list[bytes] = []
    for name in src.list_parts():
        recs = drain(src.build_part("in", name, None))
        assert recs, name
        assert [r.position.offset for r in recs] == [str(i) for i in range(len(recs))]
        assert {r.position.source for r in recs} == {"generator"} and {r.position.partition for r in recs} == {name}
        ts = [orjson.loads(r.payload)["timestamp"] for r in recs]
        assert ts == sorted(ts)
        seen.extend(r.payload for r in recs)
    assert sorted(seen) == sorted(orjson.dumps(e) for e in expected)


def test_a_persons_events_stay_in_one_partition() -> None:
    src = GeneratorSource(seed=3, n_persons=300, partitions=4, days=1)
    where: defaultdict[str, set[str]] = defaultdict(set)
    for name in src.list_parts():
        for r in drain(src.build_part("in", name, None)):
            ev = orjson.loads(r.payload)
            if "anonymous_id" in ev:
                where[ev["anonymous_id"]].add(name)
    assert where and all(len(parts) == 1 for parts in where.values())


def test_generator_source_resumes_by_index() -> None:
    src = GeneratorSource(seed=1, n_persons=200, days=1, batch_size=50)
    full = drain(src.build_part("in", "gen#0", None))
    part = src.build_part("in", "gen#0", None)
    head = part.next_batch() + part.next_batch()
    rest = drain(src.build_part("in", "gen#0", part.snapshot()))
    assert part.snapshot() == 100
    assert head + rest == full


def test_generator_source_in_a_flow_with_bad_records() -> None:
    out: list[RawRecord] = []
    flow = Dataflow("gen")
    op.output(
        "out",
        op.input("in", flow, GeneratorSource(seed=2, n_persons=400, partitions=2, days=1, bad_fraction=0.05)),
        TestingSink(out),
    )
    run_main(flow)
    good = list(generate_events(seed=2, n_persons=400, days=1))
    assert len(out) > len(good)
    bad = []
    for r in out:
        try:
            ev = orjson.loads(r.payload)
        except orjson.JSONDecodeError:
            bad.append("truncated_json")
            continue
        if ev["event_id"].endswith("-bad"):
            bad.append("missing_tenant" if "tenant_id" not in ev else "bad_timestamp")
            assert "tenant_id" not in ev or not isinstance(ev["timestamp"], int)
    assert set(bad) == {"truncated_json", "missing_tenant", "bad_timestamp"}
    assert 0.02 < len(bad) / len(good) < 0.08
    assert len(out) - len(bad) == len(good)  # every good event is still there


def test_write_jsonl_round_trips_through_file_source(tmp_path: Path) -> None:
    evs = list(generate_events(seed=4, n_persons=100, days=1))
    path = tmp_path / "out" / "events.jsonl"
    assert write_jsonl(path, evs) == len(evs)
    src = FileSource([path], splits_per_file=2)
    back = [orjson.loads(r.payload) for name in src.list_parts() for r in drain(src.build_part("in", name, None))]
    assert back == evs
    n = write_jsonl(tmp_path / "bad.jsonl", serialize_events(evs, bad_fraction=0.5))
    assert n > len(evs)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SourceError, match="tenants"):
        list(generate_events(1, 10, tenants=()))
    with pytest.raises(SourceError, match="days"):
        list(generate_events(1, 10, days=0))
    with pytest.raises(SourceError, match="partitions"):
        GeneratorSource(1, 10, partitions=0)
    with pytest.raises(SourceError, match="bad_fraction"):
        GeneratorSource(1, 10, bad_fraction=1.5)
    with pytest.raises(SourceError, match="changed since the snapshot"):
        GeneratorSource(1, 10, partitions=2).build_part("in", "gen#2", None)
