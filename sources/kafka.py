"""Kafka through Bytewax's own connector (``bytewax.connectors.kafka``, 0.21.1).

``kafka_source`` configures a ``KafkaSource``: each topic partition is a Bytewax
partition named ``"{partition}-{topic}"``, resumed from the offset kept in
Bytewax's recovery state (the connector forces its own ``group.id`` and no
auto-commit, so consumer-group lag tools show nothing). It is built with
``raise_on_errors=False``: a consume error comes out as a ``KafkaError`` item
instead of stopping the flow.

Map every item through ``kafka_message_to_record``::

    records = op.map("kafka-to-raw", op.input("kafka", flow, kafka_source(brokers, topics)),
                     kafka_message_to_record)

A ``KafkaError`` becomes a record with an ``error_payload`` (so the decoder
dead-letters it, with the error code, text, topic, partition and offset) and is
logged on ``creditflow.sources.kafka``. Broker-level trouble (all brokers down)
is retried by librdkafka inside the consumer and does not reach the flow.

Message layout: the value is the payload. JSON by default; a header
``format: avro`` marks schemaless Avro, with an optional header ``v`` = writer
schema version (an integer), mirroring the Redis stream entry layout.

The constructor never connects: ``list_parts`` (at flow start) asks the brokers
for the topics' partitions, ``build_part`` opens the consumers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from creditflow.events import RawRecord, SourcePosition
from sources import SourceError, error_payload, process_reads

__all__ = ["STARTING_OFFSETS", "ProcessKafkaSource", "kafka_message_to_record", "kafka_source"]

log = logging.getLogger("creditflow.sources.kafka")

SOURCE_NAME = "kafka"
STARTING_OFFSETS: Mapping[str, int] = {"beginning": OFFSET_BEGINNING, "end": OFFSET_END}
"""Where a partition with no resume state starts reading."""


def kafka_source(
    brokers: Sequence[str],
    topics: Sequence[str],
    starting_offset: Literal["beginning", "end"] = "beginning",
    add_config: Mapping[str, str] | None = None,
    batch_size: int = 1000,
    tail: bool = True,
    process: tuple[int, int] | None = None,
) -> KafkaSource:
    """A Bytewax ``KafkaSource`` that emits broker errors as items instead of raising.

    :arg brokers: ``host:port`` of the bootstrap brokers.
    :arg topics: Topics to read; every partition of each is a Bytewax partition.
    :arg starting_offset: ``"beginning"`` or ``"end"``: where a partition starts
        when there is no resume state.
    :arg add_config: Extra librdkafka settings (security, ``fetch.min.bytes``...).
    :arg batch_size: Messages per ``consume`` call at most.
    :arg tail: Keep waiting for new messages at the end of a partition (default);
        ``False`` ends each partition at its end (bounded backfill).
    :arg process: ``(index, processes)`` of a cluster of one-worker processes:
        this process lists (and so reads) only the partitions whose number is
        ``index`` modulo ``processes`` (``ProcessKafkaSource``), as the Redis
        source does, so a producer writing each event to partition
        ``operators.routing.partition_of(...)`` has it read where its device's
        state is. Default: Bytewax shares every partition out.

    >>> src = kafka_source(["kafka-1:9092"], ["events"])   # does not connect
    >>> src._starting_offset == OFFSET_BEGINNING, src._raise_on_errors
    (True, False)
    """
    if isinstance(brokers, str) or isinstance(topics, str):
        raise SourceError("brokers and topics must be lists, not single strings; wrap them: ['host:9092']")
    if not brokers or not topics:
        raise SourceError("kafka_source needs at least one broker and one topic")
    if starting_offset not in STARTING_OFFSETS:
        raise SourceError(f"starting_offset must be one of {list(STARTING_OFFSETS)} (got {starting_offset!r})")
    if batch_size < 1:
        raise SourceError(f"batch_size must be >= 1 (got {batch_size})")
    process_reads(process, 0)  # refuses a process outside its cluster now, not at flow start
    settings: dict[str, Any] = {
        "brokers": list(brokers),
        "topics": list(topics),
        "tail": tail,
        "starting_offset": STARTING_OFFSETS[starting_offset],
        "add_config": dict(add_config) if add_config else None,
        "batch_size": batch_size,
        "raise_on_errors": False,
    }
    return KafkaSource(**settings) if process is None else ProcessKafkaSource(process, **settings)


class ProcessKafkaSource(KafkaSource):
    """A ``KafkaSource`` listing only the partitions of one cluster process: number ``index`` modulo ``processes``.

    Bytewax names a Kafka partition ``"{partition}-{topic}"``; the brokers are asked
    for the partitions as before (``KafkaSource.list_parts``), then filtered.
    """

    def __init__(self, process: tuple[int, int], **settings: Any) -> None:
        super().__init__(**settings)
        self.process = process

    def list_parts(self) -> list[str]:
        return [part for part in super().list_parts() if process_reads(self.process, int(part.split("-", 1)[0]))]


def _position(msg: KafkaSourceMessage[Any, Any]) -> SourcePosition:
    offset = "" if msg.offset is None else str(msg.offset)
    return SourcePosition(SOURCE_NAME, f"{msg.topic}-{msg.partition}", offset)


def _header(msg: KafkaSourceMessage[Any, Any], name: str) -> bytes | None:
    for key, value in msg.headers or ():
        if key == name:
            return value
    return None


def kafka_message_to_record(item: KafkaSourceMessage[Any, Any] | KafkaError[Any, Any]) -> RawRecord:
    """One item of the Kafka source as a ``RawRecord`` (see the module docstring).

    >>> msg = KafkaSourceMessage(key=None, value=b'{"a":1}', topic="events", partition=3, offset=42)
    >>> rec = kafka_message_to_record(msg)
    >>> rec.payload, rec.position, rec.format
    (b'{"a":1}', SourcePosition(source='kafka', partition='events-3', offset='42'), 'json')
    """
    if isinstance(item, KafkaError):
        msg = item.msg
        err = item.err
        code = err.code() if hasattr(err, "code") else None
        text = err.str() if hasattr(err, "str") else str(err)
        position = _position(msg)
        log.warning("kafka error on %s at offset %s: %s (code %s)", position.partition, position.offset, text, code)
        payload = error_payload(
            f"kafka consume error: {text}",
            code=code,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
        )
        return RawRecord(payload, position, "json")
    value = item.value
    payload = b"" if value is None else value if isinstance(value, bytes) else str(value).encode()
    position = _position(item)
    fmt = _header(item, "format")
    if fmt is None or fmt in (b"json", "json"):
        return RawRecord(payload, position, "json")
    if fmt in (b"avro", "avro"):
        version_raw = _header(item, "v")
        if version_raw is None:
            return RawRecord(payload, position, "avro")
        try:
            return RawRecord(payload, position, "avro", int(version_raw))
        except ValueError:
            message = f"kafka message header 'v' (Avro schema version) is not an integer: {version_raw!r}"
    else:
        message = f"kafka message header 'format' must be 'json' or 'avro' (got {fmt!r})"
    return RawRecord(error_payload(message, value=payload), position, "json")
