"""forget_in_streams against a real redis-server (fixtures in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis

from creditflow.events import DeadLetter, Event, RawRecord
from creditflow.forgotten import ForgottenIds
from schemas.decode import encode_avro
from sources import SourceError
from sources.redis_forget import Decoder, StreamForgetReport, forget_in_streams, sweep_decoder
from sources.redis_streams import RedisStreamSource, publish

pytestmark = pytest.mark.integration

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DECODE = sweep_decoder(NOW)
ANN = "ann-7f3e"  # forgotten as a user in acme; the same user id in globex must survive
PHONE = "phone-9c1d"  # forgotten as a device in acme


def forgotten_list() -> ForgottenIds:
    ids = ForgottenIds(lambda tenant: b"test-salt-" + tenant.encode())
    ids.add("acme", "u:" + ANN)
    ids.add("acme", "d:" + PHONE)
    return ids


def ev(n: int, tenant: str = "acme", **ids: str) -> dict[str, Any]:
    return {"event_id": f"e{n}", "tenant_id": tenant, "event_type": "click", "timestamp": NOW - n, **ids}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def xadd(client: redis.Redis, stream: str, fields: dict[Any, Any]) -> bytes:
    entry_id: Any = client.xadd(stream, fields)
    return bytes(entry_id)


def add_json(client: redis.Redis, stream: str, payload: Any) -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return xadd(client, stream, {"data": data})


def add_avro(client: redis.Redis, stream: str, event: dict[str, Any], version: int | None = 2) -> bytes:
    fields: dict[str, Any] = {"avro": encode_avro(event, version)}
    if version is not None:
        fields["v"] = str(version)
    return xadd(client, stream, fields)


def populate(client: redis.Redis) -> tuple[dict[str, list[bytes]], dict[str, list[bytes]]]:
    """Two streams, two tenants, JSON and Avro; returns (all ids, expected survivors) per stream."""
    doomed: set[tuple[str, bytes]] = set()  # ids are per stream: two streams can both have 1-0
    all_ids: dict[str, list[bytes]] = {"ev:a": [], "ev:b": []}

    def put(stream: str, entry_id: bytes, forget: bool) -> None:
        all_ids[stream].append(entry_id)
        if forget:
            doomed.add((stream, entry_id))

    a, b = "ev:a", "ev:b"
    put(a, add_json(client, a, ev(1, user_id=ANN)), True)
    put(a, add_json(client, a, ev(2, user_id="bob")), False)
    put(a, add_avro(client, a, ev(3, user_id=ANN), version=1), True)
    put(a, add_json(client, a, ev(4, "globex", user_id=ANN)), False)  # same id, other tenant
    put(a, add_avro(client, a, ev(5, anonymous_id="anon-1", device_id=PHONE)), True)
    put(a, add_avro(client, a, ev(6, "globex", device_id=PHONE), version=None), False)
    put(a, add_json(client, a, ev(7, anonymous_id="anon-2")), False)
    put(a, add_json(client, a, {**ev(8, user_id=ANN), "timestamp": "yesterday"}), True)  # a dead letter, JSON
    put(a, add_json(client, a, b"[1, 2, 3]"), False)  # undecodable
    put(b, add_json(client, b, ev(9, user_id="bob", device_id=PHONE)), True)  # another user on the device
    put(b, add_avro(client, b, {**ev(10, device_id=PHONE), "timestamp": NOW + 10**10}), True)  # a dead letter, Avro
    put(b, add_json(client, b, ev(11, "globex", user_id=ANN, device_id=PHONE)), False)
    put(b, xadd(client, b, {"tenant_id": "acme", "user_id": ANN}), True)  # no payload field
    put(b, xadd(client, b, {"avro": b"\xff\x00garbage"}), False)  # undecodable
    put(b, add_avro(client, b, ev(12, user_id="carol")), False)
    put(b, add_json(client, b, b"{not json " + ANN.encode()), False)  # undecodable; the id cannot be read
    survivors = {s: [i for i in ids if (s, i) not in doomed] for s, ids in all_ids.items()}
    return all_ids, survivors


def entries(client: redis.Redis, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    reply: Any = client.xrange(stream)
    return [(bytes(i), dict(f)) for i, f in reply]


def bounded(limit: int) -> Decoder:
    """DECODE that fails the test instead of looping forever if the sweep rereads entries."""
    calls = [0]

    def decode(record: RawRecord) -> Event | DeadLetter:
        calls[0] += 1
        assert calls[0] <= limit, "the sweep reads the same entries again and again"
        return DECODE(record)

    return decode


def names_forgotten_raw(fields: dict[bytes, bytes]) -> bool:
    raw = b"".join(fields.values())
    return b"acme" in raw and (ANN.encode() in raw or PHONE.encode() in raw)


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_sweep_deletes_exactly_the_forgotten_persons_entries(client: redis.Redis, chunk: int) -> None:
    all_ids, survivors = populate(client)
    before = {s: entries(client, s) for s in all_ids}
    assert sum(names_forgotten_raw(f) for es in before.values() for _, f in es) == 7  # the check can see them

    report = forget_in_streams(client, ["ev:a", "ev:b"], forgotten_list(), bounded(100), chunk=chunk)

    assert report == StreamForgetReport(scanned=16, deleted=7, undecodable=3)
    for stream in all_ids:
        after = entries(client, stream)
        assert [i for i, _ in after] == survivors[stream]  # the rest, in order
        assert after == [(i, f) for i, f in before[stream] if i in survivors[stream]]  # untouched
        assert not any(names_forgotten_raw(f) for _, f in after), stream
    assert b"globex" in b"".join(v for _, f in entries(client, "ev:a") for v in f.values())

    again = forget_in_streams(client, ["ev:a", "ev:b"], forgotten_list(), DECODE, chunk=chunk)
    assert again == StreamForgetReport(scanned=9, deleted=0, undecodable=3)
    assert {s: [i for i, _ in entries(client, s)] for s in all_ids} == survivors


def test_nothing_forgotten_deletes_nothing(client: redis.Redis) -> None:
    all_ids, _ = populate(client)
    empty = ForgottenIds(lambda tenant: b"s")
    assert forget_in_streams(client, ["ev:a", "ev:b"], empty, DECODE) == StreamForgetReport(16, 0, 3)
    assert {s: [i for i, _ in entries(client, s)] for s in all_ids} == all_ids


def test_entries_appended_or_trimmed_during_the_sweep_are_handled_once(client: redis.Redis) -> None:
    publish(client, "ev", [ev(i, user_id=ANN if i % 2 else "bob") for i in range(10)])
    ids = [i for i, _ in entries(client, "ev")]
    appended: list[bytes] = []
    seen: list[str] = []

    def decode_while_others_write(record: RawRecord) -> Event | DeadLetter:
        seen.append(record.position.offset)
        assert len(seen) <= 100, "the sweep reads the same entries again and again"
        if len(appended) < 3:  # a producer writes while the sweep reads
            appended.append(add_json(client, "ev", ev(100 + len(appended), user_id=ANN)))
            appended.append(add_json(client, "ev", ev(200 + len(appended), user_id="dan")))
        if record.position.offset == ids[1].decode():  # the trimmer removes e0, e1 before the sweep's XDEL
            client.xtrim("ev", minid=ids[2], approximate=False)
        return DECODE(record)

    report = forget_in_streams(client, ["ev"], forgotten_list(), decode_while_others_write, chunk=4)

    assert report == StreamForgetReport(scanned=14, deleted=6, undecodable=0)  # e1 was trimmed, not deleted
    assert len(seen) == len(set(seen)) == 14  # every entry looked at once
    left = [orjson.loads(f[b"data"]) for _, f in entries(client, "ev")]
    assert [e.get("user_id") for e in left] == ["bob"] * 4 + ["dan"] * 2


def test_the_source_reads_on_after_entries_ahead_of_its_offset_are_deleted(redis_url: str, client: redis.Redis) -> None:
    publish(client, "ev", [ev(i, user_id=ANN if i in (3, 4, 7) else f"p{i}") for i in range(10)])
    part = RedisStreamSource(redis_url, ["ev"], batch_size=4, stop_at_end=True).build_part("in", "ev", None)
    head = part.next_batch()  # e0..e3; the offset is e3's id, an entry about to be deleted
    offset = part.snapshot()
    assert offset == head[-1].position.offset

    assert forget_in_streams(client, ["ev"], forgotten_list(), DECODE).deleted == 3

    rest: list[RawRecord] = []
    with pytest.raises(StopIteration):
        while True:
            rest.extend(part.next_batch())
    part.close()
    assert [orjson.loads(r.payload)["event_id"] for r in rest] == ["e5", "e6", "e8", "e9"]
    # a resume from the snapshot (its own entry now gone) reads the same survivors
    resumed = RedisStreamSource(redis_url, ["ev"], stop_at_end=True).build_part("in", "ev", offset)
    assert [r.position.offset for r in resumed.next_batch()] == [r.position.offset for r in rest]
    resumed.close()


def test_missing_streams_are_empty_and_other_keys_are_refused(client: redis.Redis, redis_url: str) -> None:
    assert forget_in_streams(client, ["nothing"], forgotten_list(), DECODE) == StreamForgetReport()
    client.set("plain", "x")
    with pytest.raises(SourceError, match="check that the key is a stream"):
        forget_in_streams(client, ["plain"], forgotten_list(), DECODE)
    with pytest.raises(SourceError, match="not a single string"):
        forget_in_streams(client, "ev", forgotten_list(), DECODE)
    text = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(SourceError, match="decode_responses=False"):
            forget_in_streams(text, ["ev"], forgotten_list(), DECODE)
    finally:
        text.close()


def test_default_decoder_uses_the_current_time(client: redis.Redis) -> None:
    publish(client, "ev", [ev(1, user_id=ANN), ev(2, user_id="bob")])
    assert forget_in_streams(client, ["ev"], forgotten_list()) == StreamForgetReport(2, 1, 0)
