"""Delete the raw events of forgotten persons from the Redis input streams (right to be forgotten).

Why: a ``deletion_request`` erases a person from the flow's state and from
ClickHouse, and the decoder suppresses the person's later events, but their raw
events still sit in the input streams until the source's trimmer
(``sources.redis_trim``) or ``MAXLEN`` removes them. ``forget_in_streams`` (run by
``creditflow forget``) removes them at once: it walks each stream with
``XRANGE ... COUNT chunk``, turns each entry into a ``RawRecord`` exactly as the
source does (``entry_to_record``), decodes it with the project's decoder
(``schemas.decode.decode``) and XDELs the entries whose event names a key listed
in ``ForgottenIds``.

An entry that does not decode to an ``Event`` (a dead letter to be) is checked
best-effort: its JSON object (field ``data``), its Avro record (field ``avro``,
read with any known schema version) or, for an entry with neither field, its
flat fields; if ``tenant_id`` and one of ``user_id``/``device_id``/``anonymous_id``
are strings naming a forgotten key, it is deleted too. Otherwise it is kept and
counted as ``undecodable``.

Cost: one full read of every stream, over the network, per sweep (~365 B per
entry) and one decode per entry (see the report of ``forget_in_streams`` for a
measured rate); at most ``chunk`` entries are held in memory. Each XRANGE blocks
Redis for the time it takes to serialize ``chunk`` entries (about a millisecond
for 1,000). The XDEL of a chunk's matches travels in the same round trip as the
next chunk's XRANGE.

Concurrency: each XRANGE starts just after the last id seen (``(id``, exclusive),
so every entry is looked at once, including entries appended while the sweep
runs; the sweep ends at the first read that returns less than a full chunk (it
has caught up; a producer faster than the sweep would keep it going). Entries
trimmed between the read and the XDEL are simply not counted as deleted (XDEL
counts what it removed). A second sweep deletes nothing more; an interrupted
sweep can be run again.

What XDEL does to the Redis source (``sources.redis_streams``): the source reads
with plain ``XREAD`` from the last id it emitted (no consumer group). XREAD
returns the entries with a greater id that exist, so deleted entries ahead of
the offset are skipped, and an offset whose own entry was deleted still works
(ids are compared, not looked up); a Bytewax resume from such a snapshot reads
the surviving entries after it. XTRIM MINID (the trimmer) is unaffected.
Consumer groups (not used by the source): new reads (``>``) skip deleted
entries; a deleted entry still pending in a group's PEL comes back from a
history read with no fields until it is XACKed (XAUTOCLAIM drops it).

Caveat: XDEL only flags an entry as deleted inside its stream node (up to 100
entries / 4 KB); the bytes stay in memory, in ``DUMP``, in RDB files and in what
a replica receives until every entry of that node is deleted or the node is
trimmed. The erasure is complete at the trimmer's next pass behind those
entries, not at the XDEL.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson
import redis

from creditflow.events import DeadLetter, Event, RawRecord
from creditflow.forgotten import ForgottenIds
from creditflow.pii import PiiHasher
from schemas.decode import decode as decode_record
from schemas.registry import LATEST_VERSION, SCHEMA_VERSIONS, load_schema
from sources import SourceError
from sources.redis_streams import AVRO_FIELD, DATA_FIELD, VERSION_FIELD, entry_to_record

__all__ = ["CHUNK", "Decoder", "StreamForgetReport", "forget_in_streams", "sweep_decoder"]

log = logging.getLogger("creditflow.sources.redis")

CHUNK = 1000
"""Entries per XRANGE (and at most per XDEL)."""

Decoder = Callable[[RawRecord], Event | DeadLetter]
"""One raw record to an ``Event`` or a ``DeadLetter``, as the flow's decode step does."""


@dataclass(frozen=True, slots=True)
class StreamForgetReport:
    """What a sweep did, summed over its streams."""

    scanned: int = 0
    """Entries read."""
    deleted: int = 0
    """Entries removed (XDEL's own count)."""
    undecodable: int = 0
    """Entries kept because neither the decoder nor the best-effort check could read a person from them."""

    def __add__(self, other: StreamForgetReport) -> StreamForgetReport:
        return StreamForgetReport(
            self.scanned + other.scanned, self.deleted + other.deleted, self.undecodable + other.undecodable
        )


def sweep_decoder(now_ms: int, pii: PiiHasher | None = None) -> Decoder:
    """``schemas.decode.decode`` with a fixed future bound ``now_ms`` and hasher ``pii``.

    The hasher only touches traits and metadata, never the person ids, so the
    default (public, unkeyed) one finds the same persons as the flow's.
    """
    hasher = PiiHasher.unkeyed() if pii is None else pii

    def decode(record: RawRecord) -> Event | DeadLetter:
        return decode_record(record, now_ms, hasher)

    return decode


def forget_in_streams(
    client: redis.Redis,
    streams: Sequence[str],
    forgotten: ForgottenIds,
    decode: Decoder | None = None,
    chunk: int = CHUNK,
) -> StreamForgetReport:
    """XDEL, from each of ``streams``, every entry whose event names a key listed in ``forgotten``.

    ``client`` must return bytes (``decode_responses=False``, as the source's
    does). ``decode`` defaults to ``sweep_decoder`` at the current time. A
    missing stream is an empty one; a key that is not a stream raises
    ``SourceError``. Connection errors propagate: rerun the sweep.
    """
    if isinstance(streams, str):
        raise SourceError("streams must be a list of stream names, not a single string; wrap it: [name]")
    if chunk < 1:
        raise SourceError(f"chunk must be >= 1 (got {chunk})")
    if client.connection_pool.connection_kwargs.get("decode_responses"):
        raise SourceError("forget_in_streams needs a redis client with decode_responses=False (payloads are bytes)")
    if decode is None:
        decode = sweep_decoder(int(time.time() * 1000))
    total = StreamForgetReport()
    for stream in streams:
        report = _sweep(client, stream, forgotten, decode, chunk)
        log.info(
            "forget sweep of stream %r: %d entries scanned, %d deleted, %d undecodable kept",
            stream,
            report.scanned,
            report.deleted,
            report.undecodable,
        )
        total += report
    return total


def _sweep(
    client: redis.Redis, stream: str, forgotten: ForgottenIds, decode: Decoder, chunk: int
) -> StreamForgetReport:
    scanned = deleted = undecodable = 0
    start = "-"
    matches: list[Any] = []
    while True:
        pipe = client.pipeline(transaction=False)
        if matches:
            pipe.xdel(stream, *matches)
        pipe.xrange(stream, min=start, max="+", count=chunk)
        try:
            replies = pipe.execute()
        except redis.ResponseError as exc:
            raise SourceError(
                f"redis refused XRANGE/XDEL on {stream!r}: {exc}; check that the key is a stream"
            ) from exc
        if matches:
            deleted += int(replies[0])
        entries = replies[-1] or []
        matches = []
        for entry_id, fields in entries:
            verdict = _names_forgotten(stream, entry_id, fields or {}, forgotten, decode)
            if verdict:
                matches.append(entry_id)
            elif verdict is None:
                undecodable += 1
        scanned += len(entries)
        if len(entries) < chunk:
            if matches:
                deleted += int(client.xdel(stream, *matches))
            return StreamForgetReport(scanned, deleted, undecodable)
        start = "(" + _text(entries[-1][0])


def _names_forgotten(
    stream: str, entry_id: Any, fields: Mapping[bytes, bytes], forgotten: ForgottenIds, decode: Decoder
) -> bool | None:
    """True: delete; False: keep; None: keep, no person could be read from the entry."""
    item = decode(entry_to_record(stream, _text(entry_id), fields))
    if isinstance(item, Event):
        return forgotten.names_forgotten(item)
    obj = _best_effort_object(fields)
    if obj is None:
        return None
    tenant_id = obj.get("tenant_id")
    return type(tenant_id) is str and forgotten.names_forgotten_object(tenant_id, obj)


def _best_effort_object(fields: Mapping[bytes, bytes]) -> Mapping[str, Any] | None:
    """The entry's payload as an object, however it failed validation; None if it is not one."""
    data = fields.get(DATA_FIELD)
    if data is not None:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        return obj if isinstance(obj, dict) else None
    avro = fields.get(AVRO_FIELD)
    if avro is not None:
        return _read_avro_any(avro, fields.get(VERSION_FIELD))
    return {_text(k): _text(v) for k, v in fields.items()} or None


def _read_avro_any(payload: bytes, version_raw: bytes | None) -> dict[str, Any] | None:
    """Read ``payload`` with its writer version if known, else with each version, newest first."""
    try:
        version = LATEST_VERSION if version_raw is None else int(version_raw)
    except ValueError:
        version = -1
    versions = [version] if version in SCHEMA_VERSIONS else sorted(SCHEMA_VERSIONS, reverse=True)
    for v in versions:
        buf = io.BytesIO(payload)
        try:
            obj = fastavro.schemaless_reader(buf, load_schema(v), None)
        except (ValueError, TypeError, EOFError, IndexError, KeyError, UnicodeDecodeError, OverflowError):
            continue  # not a record of this version: try the next
        if isinstance(obj, dict) and buf.tell() == len(payload):
            return obj
    return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
