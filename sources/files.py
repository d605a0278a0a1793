"""Read JSONL and Avro container files as a partitioned, resumable Bytewax source.

A JSONL file (``.jsonl``, ``.json``, ``.ndjson``: one JSON document a line) can
be split into ``splits_per_file`` byte ranges, each its own partition
(``events.jsonl#0``, ``events.jsonl#1``, ...), so several Bytewax processes read
one big file. A line belongs to the range its first byte lies in: a range
starts at the first line that begins inside it and ends with the last line
that begins inside it. The resume state is the byte offset of the next line.

An Avro container file (``.avro``) is one partition, named after the file; each
record is re-encoded as JSON (so one decode path validates both formats) and the
resume state is the index of the next record.

Every non-blank line is emitted, garbage and invalid UTF-8 included: the decoder
dead-letters what it cannot parse. When every range is read the partitions end,
and a flow reading only files finishes on its own.

Files must not change between a run and its resume: range boundaries are derived
from the file size when the partition is built.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "events.jsonl").write_bytes(b'{"a":1}\\n\\n{"a":2}\\n')
>>> src = FileSource([d / "events.jsonl"])
>>> src.list_parts()
['events.jsonl#0']
>>> part = src.build_part("in", "events.jsonl#0", None)
>>> [(r.payload, r.position.offset) for r in part.next_batch()]
[(b'{"a":1}', '0'), (b'{"a":2}', '9')]
>>> part.snapshot()
17
>>> part.next_batch()
Traceback (most recent call last):
...
StopIteration
>>> part.close()
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Literal

import fastavro
import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from creditflow.events import RawRecord, SourcePosition
from sources import SourceError, error_payload

__all__ = ["AVRO_SUFFIXES", "JSONL_SUFFIXES", "FileSource", "avro_record_to_json"]

log = logging.getLogger("creditflow.sources.files")

JSONL_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".ndjson")
AVRO_SUFFIXES: tuple[str, ...] = (".avro",)
SOURCE_NAME = "file"


@dataclass(frozen=True, slots=True)
class _PartSpec:
    name: str
    path: Path
    kind: Literal["jsonl", "avro"]
    split: int = 0
    splits: int = 1


class FileSource(FixedPartitionedSource[RawRecord, int]):
    """JSONL and Avro container files; JSONL files optionally split into byte ranges.

    :arg paths: The files to read, each with a suffix from ``JSONL_SUFFIXES`` or
        ``AVRO_SUFFIXES``. File names (without directories) must be distinct:
        they name the partitions.
    :arg splits_per_file: Byte ranges per JSONL file (one partition each). Avro
        files are always one partition.
    :arg batch_size: Records returned by one ``next_batch`` at most.

    The constructor only checks arguments; files are opened when a partition is built.
    """

    def __init__(self, paths: Sequence[str | Path], splits_per_file: int = 1, batch_size: int = 1000):
        if isinstance(paths, str | Path):
            raise SourceError("paths must be a list of files, not a single path; wrap it: [path]")
        if not paths:
            raise SourceError("FileSource needs at least one file")
        if splits_per_file < 1:
            raise SourceError(f"splits_per_file must be >= 1 (got {splits_per_file})")
        if batch_size < 1:
            raise SourceError(f"batch_size must be >= 1 (got {batch_size})")
        self._batch_size = batch_size
        self._parts: dict[str, _PartSpec] = {}
        for raw in paths:
            path = Path(raw)
            suffix = path.suffix.lower()
            if suffix in JSONL_SUFFIXES:
                specs = [
                    _PartSpec(f"{path.name}#{i}", path, "jsonl", i, splits_per_file) for i in range(splits_per_file)
                ]
            elif suffix in AVRO_SUFFIXES:
                specs = [_PartSpec(path.name, path, "avro")]
            else:
                raise SourceError(
                    f"cannot read {path}: unknown file type {suffix!r}; "
                    f"use one of {list(JSONL_SUFFIXES + AVRO_SUFFIXES)}"
                )
            for spec in specs:
                if spec.name in self._parts:
                    raise SourceError(
                        f"two files are both named {path.name!r} ({self._parts[spec.name].path} and {path}); "
                        "file names name the partitions, so rename one"
                    )
                self._parts[spec.name] = spec

    def list_parts(self) -> list[str]:
        return list(self._parts)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _JsonlPartition | _AvroPartition:
        spec = self._parts.get(for_part)
        if spec is None:
            raise SourceError(
                f"step {step_id!r}: no file partition {for_part!r} (known: {sorted(self._parts)}); "
                "the file list or splits_per_file changed since the snapshot was taken"
            )
        try:
            fh = open(spec.path, "rb")  # closed by the partition's close()
        except OSError as exc:
            raise SourceError(f"step {step_id!r}: cannot open {spec.path}: {exc}") from exc
        if spec.kind == "jsonl":
            return _JsonlPartition(fh, spec, resume_state, self._batch_size)
        return _AvroPartition(fh, spec, resume_state, self._batch_size)


class _JsonlPartition(StatefulSourcePartition[RawRecord, int]):
    def __init__(self, fh: BinaryIO, spec: _PartSpec, resume_state: int | None, batch_size: int):
        self._fh = fh
        self._name = spec.name
        self._batch_size = batch_size
        size = os.fstat(fh.fileno()).st_size
        start = size * spec.split // spec.splits
        # The last range is open-ended: it reads to EOF.
        self._end: int | None = None if spec.split == spec.splits - 1 else size * (spec.split + 1) // spec.splits
        if resume_state is not None:
            offset = resume_state
        elif start == 0:
            offset = 0
        else:
            # Skip the line the range starts inside of (it belongs to the previous range).
            # Starting one byte early keeps a line that begins exactly at `start`.
            fh.seek(start - 1)
            offset = start - 1 + len(fh.readline())
        fh.seek(offset)
        self._offset = offset
        self._done = self._end is not None and offset >= self._end

    def next_batch(self) -> list[RawRecord]:
        if self._done:
            raise StopIteration
        batch: list[RawRecord] = []
        append = batch.append
        readline = self._fh.readline
        name = self._name
        end = self._end
        offset = self._offset
        n = 0
        while n < self._batch_size:
            if end is not None and offset >= end:
                self._done = True
                break
            line = readline()
            if not line:
                self._done = True
                break
            line_offset = offset
            offset += len(line)
            payload = line.rstrip(b"\r\n")
            if not payload.strip():
                continue
            append(RawRecord(payload, SourcePosition(SOURCE_NAME, name, str(line_offset)), "json"))
            n += 1
        self._offset = offset
        if not batch and self._done:
            raise StopIteration
        return batch

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._fh.close()


class _AvroPartition(StatefulSourcePartition[RawRecord, int]):
    def __init__(self, fh: BinaryIO, spec: _PartSpec, resume_state: int | None, batch_size: int):
        self._fh = fh
        self._spec = spec
        self._batch_size = batch_size
        self._index = resume_state or 0
        self._records = self._read_from(self._index)
        self._done = False

    def _read_from(self, start: int) -> Iterator[tuple[int, Any]]:
        index = 0
        for block in fastavro.block_reader(self._fh):
            if index + block.num_records <= start:
                index += block.num_records  # skip whole blocks without decoding them
                continue
            for record in block:
                if index >= start:
                    yield index, record
                index += 1

    def next_batch(self) -> list[RawRecord]:
        if self._done:
            raise StopIteration
        batch: list[RawRecord] = []
        name = self._spec.name
        try:
            for _ in range(self._batch_size):
                index, record = next(self._records)
                batch.append(RawRecord(avro_record_to_json(record), SourcePosition(SOURCE_NAME, name, str(index))))
                self._index = index + 1
        except StopIteration:
            self._done = True
        except Exception as exc:  # a corrupt file: fastavro raises many types; emit it, then end
            detail = f"cannot read Avro file {self._spec.path} at record {self._index}: {type(exc).__name__}: {exc}"
            log.warning("%s; emitting it as a source error and ending partition %s", detail, name)
            payload = error_payload(detail, file=str(self._spec.path), record_index=self._index)
            batch.append(RawRecord(payload, SourcePosition(SOURCE_NAME, name, str(self._index))))
            self._done = True
        if not batch:
            raise StopIteration
        return batch

    def snapshot(self) -> int:
        return self._index

    def close(self) -> None:
        self._fh.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def avro_record_to_json(record: Any) -> bytes:
    """A decoded Avro record as JSON bytes.

    Timestamps (``timestamp-millis``/``-micros`` logical types, read as datetimes)
    become epoch milliseconds, decimals floats, bytes text.

    >>> avro_record_to_json({"ts": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), "b": b"x"})
    b'{"ts":1767225600000,"b":"x"}'
    """
    return orjson.dumps(record, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
