"""Kafka wiring only: no broker here, and none is faked. Settings and message conversion."""

from __future__ import annotations

import logging

import orjson
import pytest
from bytewax import operators as op
from bytewax.connectors import kafka as bw_kafka
from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END
from confluent_kafka import KafkaError as ConfluentKafkaError

from creditflow.events import RawRecord, SourcePosition
from sources import SOURCE_ERROR_KEY, SourceError
from sources.kafka import kafka_message_to_record, kafka_source

BROKERS = ["kafka-0.invalid:9092", "kafka-1.invalid:9092"]


@pytest.fixture
def no_kafka_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to create a Kafka client fails the test: construction must not connect."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a Kafka client was created")

    monkeypatch.setattr(bw_kafka, "AdminClient", refuse)
    monkeypatch.setattr(bw_kafka, "Consumer", refuse)


def test_kafka_source_settings_without_connecting(no_kafka_clients: None) -> None:
    src = kafka_source(BROKERS, ["events", "spend"], add_config={"security.protocol": "SSL"}, batch_size=250)
    assert isinstance(src, KafkaSource)
    assert src._brokers == BROKERS
    assert src._topics == ["events", "spend"]
    assert src._starting_offset == OFFSET_BEGINNING
    assert src._batch_size == 250
    assert src._add_config == {"security.protocol": "SSL"}
    assert src._raise_on_errors is False  # errors come out as KafkaError items
    assert src._tail is True


def test_starting_offset_end_and_bounded_reads(no_kafka_clients: None) -> None:
    src = kafka_source(BROKERS, ["events"], starting_offset="end", tail=False)
    assert src._starting_offset == OFFSET_END
    assert src._tail is False
    assert src._add_config == {}


def test_kafka_source_refuses_bad_arguments() -> None:
    with pytest.raises(SourceError, match="not single strings"):
        kafka_source("kafka:9092", ["events"])  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="not single strings"):
        kafka_source(BROKERS, "events")  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="starting_offset"):
        kafka_source(BROKERS, ["events"], starting_offset="latest")  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="at least one"):
        kafka_source([], ["events"])


def test_source_wires_into_a_dataflow(no_kafka_clients: None) -> None:
    flow = Dataflow("kafka-wiring")
    raw = op.map("to-raw", op.input("kafka", flow, kafka_source(BROKERS, ["events"])), kafka_message_to_record)
    op.inspect("seen", raw)
    assert "kafka-wiring.kafka" in {s.step_id for s in flow.substeps}


def test_a_cluster_process_lists_only_its_share_of_the_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Partition n of each topic goes to process n mod P: where ``operators.routing.partition_of`` puts devices."""
    parts = ["0-events", "1-events", "2-events", "3-events", "10-events", "0-spend", "1-spend"]
    monkeypatch.setattr(bw_kafka, "AdminClient", lambda _config: object())  # the brokers' answer, below
    monkeypatch.setattr(bw_kafka, "_list_parts", lambda _client, _topics: iter(parts))
    shares = [kafka_source(BROKERS, ["events", "spend"], process=(i, 2)).list_parts() for i in range(2)]
    assert shares == [["0-events", "2-events", "10-events", "0-spend"], ["1-events", "3-events", "1-spend"]]
    assert sorted(shares[0] + shares[1]) == sorted(parts)
    assert kafka_source(BROKERS, ["events", "spend"]).list_parts() == parts  # without a process: every partition


def test_a_process_outside_the_cluster_is_refused() -> None:
    with pytest.raises(SourceError, match="0 <= index < processes"):
        kafka_source(BROKERS, ["events"], process=(2, 2))


def msg(value: bytes | None, offset: int = 42, headers: list[tuple[str, bytes]] | None = None) -> KafkaSourceMessage:
    return KafkaSourceMessage(
        key=b"k", value=value, topic="events", partition=3, offset=offset, headers=headers or [], timestamp=(1, 17)
    )


def test_message_to_record() -> None:
    rec = kafka_message_to_record(msg(b'{"event_id":"e1"}'))
    assert rec == RawRecord(b'{"event_id":"e1"}', SourcePosition("kafka", "events-3", "42"), "json", None)


def test_avro_headers_set_format_and_schema_version() -> None:
    rec = kafka_message_to_record(msg(b"\x02\x04", headers=[("format", b"avro"), ("v", b"3")]))
    assert (rec.payload, rec.format, rec.schema_version) == (b"\x02\x04", "avro", 3)
    rec = kafka_message_to_record(msg(b"\x02", headers=[("format", b"avro")]))
    assert (rec.format, rec.schema_version) == ("avro", None)
    assert kafka_message_to_record(msg(b"{}", headers=[("format", b"json")])).format == "json"


@pytest.mark.parametrize(
    "headers, expected",
    [([("format", b"avro"), ("v", b"x")], "not an integer"), ([("format", b"protobuf")], "must be 'json' or 'avro'")],
)
def test_bad_headers_become_source_errors(headers: list[tuple[str, bytes]], expected: str) -> None:
    rec = kafka_message_to_record(msg(b"\xff payload", headers=headers))
    body = orjson.loads(rec.payload)
    assert expected in body[SOURCE_ERROR_KEY]
    assert body["value"] == "\\xff payload"
    assert rec.format == "json" and rec.position.offset == "42"


def test_tombstone_becomes_an_empty_payload() -> None:
    assert kafka_message_to_record(msg(None)).payload == b""  # the decoder dead-letters it (parse_error)


def test_kafka_error_item_becomes_a_dead_letter_payload(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="creditflow.sources.kafka")
    err = KafkaError(ConfluentKafkaError(ConfluentKafkaError.UNKNOWN_TOPIC_OR_PART), msg(None, offset=7))
    rec = kafka_message_to_record(err)
    body = orjson.loads(rec.payload)
    assert body[SOURCE_ERROR_KEY].startswith("kafka consume error: ")
    assert "Unknown topic or partition" in body[SOURCE_ERROR_KEY]
    assert (body["code"], body["topic"], body["partition"], body["offset"]) == (3, "events", 3, 7)
    assert rec.position == SourcePosition("kafka", "events-3", "7")
    assert "kafka error on events-3" in caplog.text


def test_error_without_offset_keeps_an_empty_offset() -> None:
    bare = KafkaSourceMessage(key=None, value=None, topic="events", partition=0)
    rec = kafka_message_to_record(KafkaError(ConfluentKafkaError(ConfluentKafkaError._TRANSPORT, "down"), bare))
    assert rec.position == SourcePosition("kafka", "events-0", "")
    assert "down" in orjson.loads(rec.payload)[SOURCE_ERROR_KEY]
