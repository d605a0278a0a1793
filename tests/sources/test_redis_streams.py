"""RedisStreamSource and publish against a real redis-server (fixtures in tests/conftest.py)."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import orjson
import pytest
import redis
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from creditflow.events import RawRecord, SourcePosition
from sources import SOURCE_ERROR_KEY, SourceError
from sources.redis_streams import RedisStreamSource, publish

pytestmark = pytest.mark.integration


def drain(part: Any) -> list[RawRecord]:
    out: list[RawRecord] = []
    for _ in range(100_000):
        try:
            out.extend(part.next_batch())
        except StopIteration:
            return out
    raise AssertionError("partition never ended")


def events(n: int, stream: str) -> list[dict[str, Any]]:
    return [{"event_id": f"{stream}-{i}", "tenant_id": "acme", "event_type": "click", "timestamp": i} for i in range(n)]


@pytest.fixture
def client(redis_url: str) -> Any:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def test_publish_2500_events_over_two_streams_and_read_them_all(redis_url: str, client: redis.Redis) -> None:
    assert publish(client, "ev:a", events(1250, "a"), pipeline_size=300) == 1250
    assert publish(client, "ev:b", (orjson.dumps(e) for e in events(1250, "b"))) == 1250  # bytes as they are

    src = RedisStreamSource(redis_url, ["ev:a", "ev:b"], batch_size=1000, stop_at_end=True)
    assert src.list_parts() == ["ev:a", "ev:b"]
    for stream, tag in (("ev:a", "a"), ("ev:b", "b")):
        part = src.build_part("in", stream, None)
        first = part.next_batch()
        assert len(first) == 1000  # COUNT = batch_size
        recs = first + drain(part)
        part.close()
        assert [orjson.loads(r.payload)["event_id"] for r in recs] == [f"{tag}-{i}" for i in range(1250)]
        ids = [bytes(e[0]).decode() for e in client.xrange(stream) or []]  # type: ignore[arg-type]
        assert [r.position for r in recs] == [SourcePosition("redis", stream, i) for i in ids]
        assert all(r.format == "json" and r.schema_version is None for r in recs)
        assert part.snapshot() == ids[-1]


def test_resume_from_a_snapshot_id_reads_only_the_rest(redis_url: str, client: redis.Redis) -> None:
    publish(client, "ev", events(700, "x"))
    src = RedisStreamSource(redis_url, ["ev"], batch_size=250, stop_at_end=True)
    part = src.build_part("in", "ev", None)
    assert part.snapshot() == "0-0"
    head = part.next_batch()
    state = part.snapshot()
    part.close()
    assert state == head[-1].position.offset

    publish(client, "ev", events(50, "y"))  # arrives while the flow is down
    rest = drain(src.build_part("in", "ev", state))
    got = [orjson.loads(r.payload)["event_id"] for r in head + rest]
    assert got == [f"x-{i}" for i in range(700)] + [f"y-{i}" for i in range(50)]


AVRO_V2 = fastavro.parse_schema(
    {"type": "record", "name": "E", "fields": [{"name": "event_id", "type": "string"}, {"name": "n", "type": "int"}]}
)


def avro_bytes(record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, AVRO_V2, record)
    return buf.getvalue()


def test_avro_entries_keep_bytes_and_schema_version(redis_url: str, client: redis.Redis) -> None:
    client.xadd("ev", {"avro": avro_bytes({"event_id": "a1", "n": 1}), "v": "2"})
    client.xadd("ev", {"avro": avro_bytes({"event_id": "a2", "n": 2})})
    client.xadd("ev", {"avro": avro_bytes({"event_id": "a3", "n": 3}), "v": "two"})
    recs = drain(RedisStreamSource(redis_url, ["ev"], stop_at_end=True).build_part("in", "ev", None))
    with_v, without_v, bad_v = recs
    assert (with_v.format, with_v.schema_version) == ("avro", 2)
    assert fastavro.schemaless_reader(io.BytesIO(with_v.payload), AVRO_V2, AVRO_V2) == {"event_id": "a1", "n": 1}
    assert (without_v.format, without_v.schema_version) == ("avro", None)
    assert bad_v.format == "json"
    assert "not an integer" in orjson.loads(bad_v.payload)[SOURCE_ERROR_KEY]


def test_an_entry_without_a_payload_field_is_emitted_not_dropped(redis_url: str, client: redis.Redis) -> None:
    publish(client, "ev", events(1, "ok"))
    client.xadd("ev", {"event_id": "flat", "tenant_id": "acme", "junk": b"\xff\xfe"})
    publish(client, "ev", events(1, "ok2"))
    recs = drain(RedisStreamSource(redis_url, ["ev"], stop_at_end=True).build_part("in", "ev", None))
    assert len(recs) == 3
    body = orjson.loads(recs[1].payload)
    assert "neither a 'data' nor an 'avro' field" in body[SOURCE_ERROR_KEY]
    assert body["fields"] == {"event_id": "flat", "tenant_id": "acme", "junk": "\\xff\\xfe"}
    assert "event_id" not in body  # no event fields at the top: the decoder must dead-letter it


def test_flow_with_two_partitions_reads_both_streams(redis_url: str, client: redis.Redis) -> None:
    publish(client, "s1", events(1200, "s1"))
    publish(client, "s2", events(800, "s2"))
    out: list[RawRecord] = []
    flow = Dataflow("redis")
    recs = op.input("in", flow, RedisStreamSource(redis_url, ["s1", "s2"], batch_size=500, stop_at_end=True))
    op.output("out", recs, TestingSink(out))
    run_main(flow)
    by_stream: dict[str, list[str]] = {"s1": [], "s2": []}
    for r in out:
        by_stream[r.position.partition].append(orjson.loads(r.payload)["event_id"])
    assert by_stream == {"s1": [f"s1-{i}" for i in range(1200)], "s2": [f"s2-{i}" for i in range(800)]}


def test_an_empty_stream_does_not_block_and_sleeps_via_next_awake(redis_url: str) -> None:
    part = RedisStreamSource(redis_url, ["nothing"], block_ms=40).build_part("in", "nothing", None)
    before = datetime.now(UTC)
    assert part.next_batch() == []
    after = datetime.now(UTC)
    assert after - before < timedelta(milliseconds=500)
    awake = part.next_awake()
    assert awake is not None and before + timedelta(milliseconds=40) <= awake <= after + timedelta(milliseconds=40)
    part.close()


def test_a_caught_up_stream_is_read_again_with_the_others_at_the_next_gather_instant(
    redis_url: str, client: redis.Redis
) -> None:
    publish(client, "g1", events(5, "g1"))
    publish(client, "g2", events(3, "g2"))
    source = RedisStreamSource(redis_url, ["g1", "g2"], batch_size=10, gather_ms=200)
    parts = [source.build_part("in", s, None) for s in ("g1", "g2")]
    before = datetime.now(UTC)
    assert [len(p.next_batch()) for p in parts] == [5, 3]  # fewer than a batch: both streams are caught up
    wakes = [p.next_awake() for p in parts]
    assert wakes[0] is not None and wakes[0] == wakes[1]  # every partition wakes at the same instant
    assert before < wakes[0] <= datetime.now(UTC) + timedelta(milliseconds=200)
    assert wakes[0].timestamp() * 1000 % 200 == pytest.approx(0, abs=1e-3)  # a multiple of gather_ms
    for p in parts:
        p.close()


def test_a_full_batch_or_gather_ms_0_reads_again_at_once(redis_url: str, client: redis.Redis) -> None:
    publish(client, "backlog", events(25, "backlog"))
    part = RedisStreamSource(redis_url, ["backlog"], batch_size=10, gather_ms=200).build_part("in", "backlog", None)
    assert len(part.next_batch()) == 10 and part.next_awake() is None  # a backlog is read without waiting
    eager = RedisStreamSource(redis_url, ["backlog"], batch_size=100, gather_ms=0).build_part("in", "backlog", None)
    assert len(eager.next_batch()) == 25 and eager.next_awake() is None
    part.close()
    eager.close()


def test_stop_at_end_ends_an_empty_stream_at_once(redis_url: str) -> None:
    part = RedisStreamSource(redis_url, ["nothing"], stop_at_end=True).build_part("in", "nothing", None)
    with pytest.raises(StopIteration):
        part.next_batch()


def test_a_redis_restart_is_retried_with_backoff_not_a_crash(
    redis_process: Callable[[], Any], caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_process()
    c = redis.Redis.from_url(server.url)
    publish(c, "ev", events(10, "before"))
    c.close()
    part = RedisStreamSource(server.url, ["ev"], max_backoff_s=0.4).build_part("in", "ev", None)
    got = part.next_batch()
    assert len(got) == 10

    server.stop()
    caplog.set_level(logging.WARNING, logger="creditflow.sources.redis")
    delays = []
    for _ in range(5):
        now = datetime.now(UTC)
        assert part.next_batch() == []
        awake = part.next_awake()
        assert awake is not None
        delays.append((awake - now).total_seconds())
    assert delays[0] < delays[1] < delays[2] and max(delays) < 0.7  # exponential (0.1, 0.2, 0.4 s), capped at 0.4 s
    assert "retrying in" in caplog.text and "ConnectionError" in caplog.text
    assert all(r.name == "creditflow.sources.redis" for r in caplog.records)

    server.start()  # same port, empty (no persistence): new entries get later ids
    c = redis.Redis.from_url(server.url)
    publish(c, "ev", events(5, "after"))
    c.close()
    assert [orjson.loads(r.payload)["event_id"] for r in part.next_batch()] == [f"after-{i}" for i in range(5)]
    assert "reading again after 5 failures" in caplog.text
    part.close()


def test_a_key_that_is_not_a_stream_is_a_clear_error(redis_url: str, client: redis.Redis) -> None:
    client.set("plain", "x")
    part = RedisStreamSource(redis_url, ["plain"]).build_part("in", "plain", None)
    with pytest.raises(SourceError, match="check that the key is a stream"):
        part.next_batch()


def test_constructor_validates_and_does_not_connect() -> None:
    RedisStreamSource("redis://127.0.0.1:1/0", ["a"])  # nothing listens on port 1: fine until read
    with pytest.raises(SourceError, match="redis://"):
        RedisStreamSource("http://localhost:6379", ["a"])
    with pytest.raises(SourceError, match="not a single string"):
        RedisStreamSource("redis://localhost", "events")  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="distinct"):
        RedisStreamSource("redis://localhost", ["a", "a"])
    with pytest.raises(SourceError, match="changed since the snapshot"):
        RedisStreamSource("redis://localhost", ["a"]).build_part("in", "b", None)
    with pytest.raises(SourceError, match="gather_ms must be >= 0"):
        RedisStreamSource("redis://localhost", ["a"], gather_ms=-1)


def test_publish_trims_with_maxlen(redis_url: str, client: redis.Redis) -> None:
    publish(client, "ev", events(5000, "x"), maxlen=1000)
    assert 1000 <= client.xlen("ev") < 5000


def test_a_cluster_process_lists_only_its_share_of_the_streams(redis_url: str) -> None:
    streams = ["ev:0", "ev:1", "ev:2", "ev:3", "ev:4"]
    shares = [RedisStreamSource(redis_url, streams, process=(i, 2)).list_parts() for i in range(2)]
    assert shares == [["ev:0", "ev:2", "ev:4"], ["ev:1", "ev:3"]]  # stream i read by process i % 2
    assert RedisStreamSource(redis_url, streams).list_parts() == streams


@pytest.mark.parametrize("process", [(2, 2), (-1, 2), (0, 0)])
def test_a_process_outside_the_cluster_is_refused(redis_url: str, process: tuple[int, int]) -> None:
    with pytest.raises(SourceError, match="0 <= index < processes"):
        RedisStreamSource(redis_url, ["ev:0"], process=process)
