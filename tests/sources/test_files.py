"""FileSource: JSONL byte-range splits, resume, last batch, Avro container files, bad bytes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from creditflow.events import RawRecord, SourcePosition
from sources import SOURCE_ERROR_KEY, SourceError
from sources.files import FileSource


def drain(part: Any) -> list[RawRecord]:
    """Every record of a partition, calling next_batch until StopIteration."""
    out: list[RawRecord] = []
    for _ in range(1_000_000):
        try:
            out.extend(part.next_batch())
        except StopIteration:
            return out
    raise AssertionError("partition never ended")


def read_all(src: FileSource) -> dict[str, list[RawRecord]]:
    return {name: drain(src.build_part("in", name, None)) for name in src.list_parts()}


def make_lines(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [orjson.dumps({"i": i, "pad": "x" * rng.randrange(0, 200)}) for i in range(n)]


def write_lines(path: Path, lines: list[bytes], blank_every: int = 0, trailing_newline: bool = True) -> Path:
    chunks = []
    for i, line in enumerate(lines):
        if blank_every and i % blank_every == 0:
            chunks.append(b"\n")
        chunks.append(line + b"\n")
    data = b"".join(chunks)
    if not trailing_newline:
        data = data[:-1]
    path.write_bytes(data)
    return path


def test_three_splits_read_every_line_exactly_once(tmp_path: Path) -> None:
    lines = make_lines(2000)
    path = write_lines(tmp_path / "events.jsonl", lines, blank_every=37)
    src = FileSource([path], splits_per_file=3, batch_size=128)
    assert src.list_parts() == ["events.jsonl#0", "events.jsonl#1", "events.jsonl#2"]

    parts = read_all(src)
    payloads = [r.payload for name in src.list_parts() for r in parts[name]]
    assert payloads == lines  # in file order, none twice, none missing, blank lines skipped
    assert all(len(recs) > 400 for recs in parts.values())  # the ranges really split the work
    data = path.read_bytes()
    for name, recs in parts.items():
        for rec in recs:
            assert rec.position.source == "file" and rec.position.partition == name
            assert rec.format == "json" and rec.schema_version is None
            offset = int(rec.position.offset)
            assert data[offset:].split(b"\n", 1)[0] == rec.payload  # the offset is the line's first byte


@pytest.mark.parametrize("splits", [1, 2, 3, 5, 8, 13, 40])
@pytest.mark.parametrize("trailing_newline", [True, False])
def test_any_split_count_partitions_the_lines(tmp_path: Path, splits: int, trailing_newline: bool) -> None:
    # Short lines so that range boundaries land on line starts, newlines and mid-line alike;
    # 40 splits of a small file leave some ranges with no line at all.
    lines = [b'{"n":%d}' % i for i in range(25)]
    path = write_lines(tmp_path / "small.ndjson", lines, trailing_newline=trailing_newline)
    src = FileSource([path], splits_per_file=splits, batch_size=4)
    parts = read_all(src)
    assert [r.payload for name in src.list_parts() for r in parts[name]] == lines


def test_crlf_lines_and_whitespace_only_lines(tmp_path: Path) -> None:
    path = tmp_path / "win.json"
    path.write_bytes(b'{"a":1}\r\n   \r\n\t\n{"a":2}\r\n')
    (recs,) = read_all(FileSource([path])).values()
    assert [r.payload for r in recs] == [b'{"a":1}', b'{"a":2}']


def test_resume_from_a_snapshot_mid_file_emits_exactly_the_rest(tmp_path: Path) -> None:
    lines = make_lines(1000)
    path = write_lines(tmp_path / "events.jsonl", lines, blank_every=11)
    src = FileSource([path], splits_per_file=2, batch_size=100)
    for name in src.list_parts():
        expected = drain(src.build_part("in", name, None))
        part = src.build_part("in", name, None)
        first = part.next_batch() + part.next_batch()
        state = part.snapshot()
        part.close()
        rest = drain(src.build_part("in", name, state))
        assert first + rest == expected
        assert int(rest[0].position.offset) >= state


def test_resume_at_the_end_emits_nothing(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "events.jsonl", make_lines(10))
    src = FileSource([path], batch_size=100)
    part = src.build_part("in", "events.jsonl#0", None)
    assert len(drain(part)) == 10
    assert drain(src.build_part("in", "events.jsonl#0", part.snapshot())) == []


@pytest.mark.parametrize("n_lines", [9, 10])
def test_final_batch_is_returned_and_stop_comes_on_the_next_call(tmp_path: Path, n_lines: int) -> None:
    path = write_lines(tmp_path / "events.jsonl", make_lines(n_lines))
    part = FileSource([path], batch_size=3).build_part("in", "events.jsonl#0", None)
    sizes = []
    while True:
        try:
            sizes.append(len(part.next_batch()))
        except StopIteration:
            break
    assert sum(sizes) == n_lines
    assert sizes[-1] > 0  # the last call that returned items was not swallowed by StopIteration
    assert part.snapshot() == path.stat().st_size
    with pytest.raises(StopIteration):
        part.next_batch()  # stays ended


def test_flow_reads_split_file_and_an_avro_file_then_ends(tmp_path: Path) -> None:
    lines = make_lines(3001)
    jsonl = write_lines(tmp_path / "big.jsonl", lines, blank_every=100)
    avro = write_avro(tmp_path / "more.avro", 250)
    out: list[RawRecord] = []
    flow = Dataflow("files")
    recs = op.input("in", flow, FileSource([jsonl, avro], splits_per_file=4, batch_size=500))
    op.output("out", recs, TestingSink(out))
    run_main(flow)  # returns because every partition ends at EOF

    assert sorted(r.payload for r in out if r.position.partition.startswith("big")) == sorted(lines)
    assert len([r for r in out if r.position.partition == "more.avro"]) == 250
    assert len({r.position for r in out}) == len(out)


AVRO_SCHEMA = {
    "type": "record",
    "name": "Event",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "tenant_id", "type": "string"},
        {"name": "event_type", "type": "string"},
        {"name": "timestamp", "type": "long"},
        {"name": "ts_logical", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "utm", "type": ["null", {"type": "map", "values": "string"}], "default": None},
        {"name": "raw", "type": "bytes"},
    ],
}


def avro_record(i: int) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "tenant_id": "acme",
        "event_type": "click",
        "timestamp": 1_767_225_600_000 + i,
        "ts_logical": 1_767_225_600_000 + i,
        "utm": {"source": "google", "medium": "cpc"} if i % 2 else None,
        "raw": bytes([i % 256]) if i % 3 else b"ok",
    }


def write_avro(path: Path, n: int, sync_interval: int = 2_000) -> Path:
    with path.open("wb") as fh:
        # A small sync interval writes many blocks, so resume has to skip whole blocks.
        fastavro.writer(
            fh, fastavro.parse_schema(AVRO_SCHEMA), (avro_record(i) for i in range(n)), sync_interval=sync_interval
        )
    return path


def test_avro_records_come_out_as_json_raw_records(tmp_path: Path) -> None:
    path = write_avro(tmp_path / "events.avro", 300)
    src = FileSource([path], batch_size=64)
    assert src.list_parts() == ["events.avro"]
    recs = drain(src.build_part("in", "events.avro", None))
    assert len(recs) == 300
    assert [r.position for r in recs[:2]] == [
        SourcePosition("file", "events.avro", "0"),
        SourcePosition("file", "events.avro", "1"),
    ]
    assert all(r.format == "json" for r in recs)
    first, second = orjson.loads(recs[0].payload), orjson.loads(recs[1].payload)
    assert first == {
        "event_id": "e0",
        "tenant_id": "acme",
        "event_type": "click",
        "timestamp": 1_767_225_600_000,
        "ts_logical": 1_767_225_600_000,  # timestamp-millis datetime -> epoch ms again
        "utm": None,
        "raw": "ok",
    }
    assert second["utm"] == {"source": "google", "medium": "cpc"}


@pytest.mark.parametrize("resume_at", [0, 1, 57, 150, 299, 300])
def test_avro_resume_by_record_index(tmp_path: Path, resume_at: int) -> None:
    path = write_avro(tmp_path / "events.avro", 300, sync_interval=500)
    src = FileSource([path], batch_size=40)
    rest = drain(src.build_part("in", "events.avro", resume_at))
    assert [r.position.offset for r in rest] == [str(i) for i in range(resume_at, 300)]
    assert [orjson.loads(r.payload)["event_id"] for r in rest] == [f"e{i}" for i in range(resume_at, 300)]


def test_avro_snapshot_is_the_next_record_index(tmp_path: Path) -> None:
    path = write_avro(tmp_path / "events.avro", 100)
    part = FileSource([path], batch_size=30).build_part("in", "events.avro", None)
    part.next_batch()
    assert part.snapshot() == 30
    rest = drain(FileSource([path]).build_part("in", "events.avro", part.snapshot()))
    assert rest[0].position.offset == "30" and len(rest) == 70


def test_corrupt_avro_file_is_emitted_as_a_source_error_then_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = write_avro(tmp_path / "good.avro", 200, sync_interval=500).read_bytes()
    bad = tmp_path / "bad.avro"
    bad.write_bytes(good[: len(good) // 2] + b"\xff" * 64)  # a cut-off file with a garbage tail
    recs = drain(FileSource([bad]).build_part("in", "bad.avro", None))
    *ok, err = recs
    assert 0 < len(ok) < 200
    body = orjson.loads(err.payload)
    assert SOURCE_ERROR_KEY in body and "bad.avro" in body[SOURCE_ERROR_KEY]
    assert err.position.offset == str(len(ok))
    assert "cannot read Avro file" in caplog.text

    not_avro = tmp_path / "text.avro"
    not_avro.write_bytes(b'{"this": "is json"}\n')
    (only,) = drain(FileSource([not_avro]).build_part("in", "text.avro", None))
    assert SOURCE_ERROR_KEY in orjson.loads(only.payload)


def test_invalid_utf8_and_garbage_lines_are_emitted(tmp_path: Path) -> None:
    path = tmp_path / "dirty.jsonl"
    garbage = [b'{"ok":1}', b'{"name":"caf\xe9"}', b"\x00\x01\x02 not json at all", b"\xff\xfe\xfd", b'{"ok":2}']
    path.write_bytes(b"\n".join(garbage) + b"\n")
    recs = drain(FileSource([path], splits_per_file=2, batch_size=2).build_part("in", "dirty.jsonl#0", None))
    recs += drain(FileSource([path], splits_per_file=2, batch_size=2).build_part("in", "dirty.jsonl#1", None))
    assert [r.payload for r in recs] == garbage


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unknown file type"):
        FileSource([tmp_path / "events.csv"])
    with pytest.raises(SourceError, match="rename one"):
        FileSource([tmp_path / "a" / "e.jsonl", tmp_path / "b" / "e.jsonl"])
    with pytest.raises(SourceError, match="not a single path"):
        FileSource(str(tmp_path / "e.jsonl"))  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="splits_per_file"):
        FileSource([tmp_path / "e.jsonl"], splits_per_file=0)
    with pytest.raises(SourceError, match="cannot open"):
        FileSource([tmp_path / "missing.jsonl"]).build_part("in", "missing.jsonl#0", None)
    with pytest.raises(SourceError, match="changed since the snapshot"):
        FileSource([tmp_path / "e.jsonl"]).build_part("in", "e.jsonl#3", None)
