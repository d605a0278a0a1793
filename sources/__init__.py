"""Partitioned, resumable Bytewax sources. Every source emits ``RawRecord``.

- ``sources.files.FileSource``: JSONL files split into byte ranges (part
  ``events.jsonl#0``, resume = byte offset of the next line) and Avro container
  files (part ``events.avro``, resume = record index).
- ``sources.redis_streams.RedisStreamSource``: one partition per stream (resume =
  last entry id emitted); ``publish`` writes events to a stream.
- ``sources.kafka.kafka_source``: Bytewax's own Kafka connector (part
  ``0-topic``, resume = offset); ``kafka_message_to_record`` turns its items
  into ``RawRecord``.
- ``sources.generator.GeneratorSource``: seeded synthetic multi-tenant traffic
  (part ``gen#0``, resume = record index); ``generate_events``, ``write_jsonl``.

The names in ``__all__`` are importable from ``sources`` directly; each submodule is
imported on first use, so ``import sources`` does not pull in redis, fastavro
or confluent-kafka.

Records a source cannot read as an event (a Redis entry without a payload
field, a Kafka error, an unreadable Avro block) are still emitted, with a JSON
payload built by ``error_payload``: an object whose first key is
``"_source_error"``. It lacks every event field, so the decoder dead-letters it
and the dead letter's raw bytes say what went wrong.

>>> error_payload("no data field", fields={"x": "1"})
b'{"_source_error":"no data field","fields":{"x":"1"}}'
"""

from __future__ import annotations

import importlib
from typing import Any

import orjson

from creditflow.errors import CreditflowError
from creditflow.events import SOURCE_ERROR_KEY

__all__ = [
    "SOURCE_ERROR_KEY",
    "FileSource",
    "GeneratorSource",
    "RedisStreamSource",
    "SourceError",
    "error_payload",
    "process_reads",
    "generate_events",
    "kafka_message_to_record",
    "kafka_source",
    "publish",
    "write_jsonl",
]


class SourceError(CreditflowError):
    """A source is misconfigured (missing file, duplicate partition name, bad argument)."""


def process_reads(process: tuple[int, int] | None, number: int) -> bool:
    """Whether cluster process ``process`` (``(index, processes)``; ``None``: the only one) reads partition
    ``number``: ``index`` modulo ``processes``, where ``operators.routing.partition_of`` puts a device's events.
    Raises ``SourceError`` for a process outside its cluster.

    >>> [n for n in range(5) if process_reads((1, 2), n)], process_reads(None, 7)
    ([1, 3], True)
    """
    if process is None:
        return True
    index, processes = process
    if not 0 <= index < processes:
        raise SourceError(f"process must be (index, processes) with 0 <= index < processes (got {process})")
    return number % processes == index


def error_payload(message: str, **details: Any) -> bytes:
    """A JSON payload the decoder dead-letters: ``{"_source_error": message, **details}``.

    Bytes are written as UTF-8 text (undecodable bytes as ``\\xNN``), other values
    JSON cannot hold with ``str``.
    """
    return orjson.dumps({SOURCE_ERROR_KEY: message, **details}, default=_text)


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


_LAZY = {
    "FileSource": "sources.files",
    "RedisStreamSource": "sources.redis_streams",
    "publish": "sources.redis_streams",
    "kafka_source": "sources.kafka",
    "kafka_message_to_record": "sources.kafka",
    "GeneratorSource": "sources.generator",
    "generate_events": "sources.generator",
    "write_jsonl": "sources.generator",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sources' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
