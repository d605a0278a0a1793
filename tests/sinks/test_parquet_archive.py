"""The Parquet archive of closed journeys: layout, schema, flushes, revisions, crash repair, bad input, reading.

Everything writes real files under ``tmp_path`` and reads them back with
pyarrow. Crashes are simulated the way Bytewax has them: the partition object
is dropped without ``snapshot()`` or ``close()``, a new one is built from the
last snapshot, and the items after that snapshot are written again in other
batches. Flush ages run on an injected clock, never on sleeps.
"""

from __future__ import annotations

import logging
import pickle
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import bytewax.operators as op
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, cluster_main, run_main
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import sinks.parquet_archive as archive_module
from creditflow.events import ClosedJourney
from sinks.archive_reader import archive_files, read_archive
from sinks.parquet_archive import (
    ARCHIVE_SCHEMA,
    READ_SCHEMA,
    SINK_PARTITION,
    ArchiveError,
    ArchiveResume,
    ArchiveSettings,
    ParquetArchivePartition,
    ParquetArchiveSink,
    archive_location,
    archive_partitioning,
    file_name,
)
from tests.sinks.archive_faults import faulty_filesystem

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
ODD_TENANT = "o'brien/x=y ü %"


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def journey(n: int, tenant: str | None = None, day: int | None = None, touches: int | None = None) -> ClosedJourney:
    """Journey ``n``: tenant t0..t2 and day 0..1 by default, 0..3 touches, converted when n is even."""
    tenant = f"t{n % 3}" if tenant is None else tenant
    day = n % 2 if day is None else day
    k = n % 4 if touches is None else touches
    closed = T0 + day * DAY + 1000 * n
    converted = n % 2 == 0
    return ClosedJourney(
        tenant_id=tenant,
        person_id=f"p{n}",
        journey_id=f"p{n}/{'o' if converted else 'x'}{n}",
        outcome="converted" if converted else "expired",
        closed_at_ms=closed,
        conversion_id=f"o{n}" if converted else "",
        value=10.0 + n if converted else 0.0,
        touch_channels=tuple(("email", "paid_search", "display")[i % 3] for i in range(k)),
        touch_ts_ms=tuple(closed - 60_000 * (k - i) for i in range(k)),
    )


def journeys(count: int, start: int = 0) -> list[ClosedJourney]:
    return [journey(n) for n in range(start, start + count)]


def build(
    root: Path | str, resume: ArchiveResume | None = None, clock: FakeClock | None = None, **settings: object
) -> ParquetArchivePartition:
    sink = ParquetArchiveSink(ArchiveSettings(str(root), **settings), clock=clock or FakeClock())  # type: ignore[arg-type]
    return sink.build_part("archive", SINK_PARTITION, resume)


def batches(items: Sequence[ClosedJourney], sizes: Sequence[int]) -> Iterator[list[ClosedJourney]]:
    """``items`` cut into batches of the given sizes (cycled), the last one what remains."""
    pos, i = 0, 0
    while pos < len(items):
        size = max(1, sizes[i % len(sizes)])
        yield list(items[pos : pos + size])
        pos += size
        i += 1


def parquet_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".parquet"))


def archived_ids(root: Path | str) -> list[str]:
    return sorted(read_archive(str(root))["journey_id"].to_pylist())


def ids(items: Sequence[ClosedJourney]) -> list[str]:
    return sorted(j.journey_id for j in items)


# --- layout and schema ----------------------------------------------------------


def test_layout_is_hive_by_tenant_and_utc_date_with_one_file_per_group_per_flush(tmp_path: Path) -> None:
    part = build(tmp_path)
    part.write_batch(
        [
            journey(1, tenant="acme", day=0),
            journey(2, tenant="acme", day=0),
            journey(3, tenant="acme", day=1),
            replace(journey(4, tenant=ODD_TENANT), closed_at_ms=T0 + DAY - 1),  # 23:59:59.999 on Jan 1
        ]
    )
    part.close()
    assert parquet_files(tmp_path) == [
        "tenant_id=acme/date=2026-01-01/part-archive-0000000000.parquet",
        "tenant_id=acme/date=2026-01-02/part-archive-0000000000.parquet",
        "tenant_id=o%27brien%2Fx%3Dy%20%C3%BC%20%25/date=2026-01-01/part-archive-0000000000.parquet",
    ]
    assert (part.rows_written, part.files_written, part.flushes, part.next_seq) == (4, 3, 1, 1)

    part = build(tmp_path)  # a second run: the next flush has the next seq
    part.write_batch([journey(5, tenant="acme", day=0)])
    part.close()
    assert "tenant_id=acme/date=2026-01-01/part-archive-0000000001.parquet" in parquet_files(tmp_path)


def test_files_hold_the_archive_schema_zstd_compressed_and_sorted_by_close_time(tmp_path: Path) -> None:
    part = build(tmp_path)
    part.write_batch([journey(n, tenant="acme", day=0) for n in (8, 2, 6, 4)])
    part.close()
    (path,) = tmp_path.rglob("*.parquet")
    parquet = pq.ParquetFile(path)
    assert parquet.schema_arrow == ARCHIVE_SCHEMA  # tenant_id and date are in the path only
    columns = parquet.metadata.row_group(0)
    assert {columns.column(i).compression for i in range(columns.num_columns)} == {"ZSTD"}
    table = pq.read_table(path)
    assert table["journey_id"].to_pylist() == ["p2/o2", "p4/o4", "p6/o6", "p8/o8"]


def test_read_archive_returns_every_field_with_the_partition_columns(tmp_path: Path) -> None:
    written = [journey(n) for n in range(12)] + [journey(12, tenant=ODD_TENANT, touches=3)]
    part = build(tmp_path)
    part.write_batch(written)
    part.close()
    table = read_archive(str(tmp_path))
    assert table.schema == READ_SCHEMA
    rows = {r["journey_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == ids(written)
    for j in written:
        row = rows[j.journey_id]
        assert row["tenant_id"] == j.tenant_id
        assert row["date"].isoformat() == ("2026-01-01" if j.closed_at_ms < T0 + DAY else "2026-01-02")
        assert (row["person_id"], row["outcome"], row["conversion_id"], row["value"]) == (
            j.person_id,
            j.outcome,
            j.conversion_id,
            j.value,
        )
        assert int(row["closed_at"].timestamp() * 1000) == j.closed_at_ms
        assert row["closed_at"].utcoffset() == timedelta(0)
        assert [t["channel"] for t in row["touches"]] == list(j.touch_channels)
        assert [int(t["ts"].timestamp() * 1000) for t in row["touches"]] == list(j.touch_ts_ms)


def test_partition_filters_read_only_the_tenant_and_dates_asked_for(tmp_path: Path) -> None:
    part = build(tmp_path)
    written = [journey(n, day=(n // 3) % 3) for n in range(45)]
    part.write_batch(written)
    part.close()
    # A corrupt file in every directory a filtered read must not touch: reading it would raise.
    for directory in ("tenant_id=t2/date=2026-01-01", "tenant_id=t1/date=2026-01-03", "tenant_id=t1/date=2026-01-01"):
        (tmp_path / directory).mkdir(parents=True, exist_ok=True)
        (tmp_path / directory / "part-other-0000000000.parquet").write_bytes(b"not parquet")
    with pytest.raises(pa.ArrowInvalid):
        read_archive(str(tmp_path))

    table = read_archive(str(tmp_path), tenant_id="t1", start_date="2026-01-02", end_date="2026-01-02")
    expected = [j for j in written if j.tenant_id == "t1" and n_day(j) == 1]
    assert sorted(table["journey_id"].to_pylist()) == ids(expected) and expected
    assert set(table["tenant_id"].to_pylist()) == {"t1"}
    assert {d.isoformat() for d in table["date"].to_pylist()} == {"2026-01-02"}

    open_end = read_archive(str(tmp_path), tenant_id="t0", start_date="2026-01-02")
    assert {d.isoformat() for d in open_end["date"].to_pylist()} == {"2026-01-02", "2026-01-03"}
    assert read_archive(str(tmp_path), tenant_id="nobody").num_rows == 0


def n_day(j: ClosedJourney) -> int:
    return (j.closed_at_ms - T0) // DAY


def test_read_archive_of_a_missing_archive_is_empty_and_bad_dates_are_explained(tmp_path: Path) -> None:
    table = read_archive(str(tmp_path / "nothing here"))
    assert table.num_rows == 0 and table.schema == READ_SCHEMA
    with pytest.raises(ArchiveError, match=r"start_date='2026-1-5' is not a date: use YYYY-MM-DD"):
        read_archive(str(tmp_path), start_date="2026-1-5")
    with pytest.raises(ArchiveError, match="end_date 2026-01-01 is before start_date 2026-01-02"):
        read_archive(str(tmp_path), start_date="2026-01-02", end_date="2026-01-01")


def test_archive_location_and_partitioning_let_pyarrow_read_the_same_layout(tmp_path: Path) -> None:
    part = build(tmp_path)
    part.write_batch(journeys(6))
    part.close()
    for uri in (str(tmp_path), f"file://{tmp_path}", str(tmp_path) + "/"):
        fs, path = archive_location(uri)
        assert (fs.type_name, path) == ("local", str(tmp_path))
    import pyarrow.dataset as ds

    fs, path = archive_location(str(tmp_path))
    table = ds.dataset(path, filesystem=fs, format="parquet", partitioning=archive_partitioning()).to_table()
    assert sorted(table["journey_id"].to_pylist()) == ids(journeys(6))
    assert set(table["tenant_id"].to_pylist()) == {"t0", "t1", "t2"}
    with pytest.raises(ArchiveError, match="cannot open the archive at 'file://relative/path'"):
        archive_location("file://relative/path")


def test_archive_files_lists_each_tenants_files_in_the_window_for_ray(tmp_path: Path) -> None:
    part = build(tmp_path, flush_rows=10)
    for batch in batches([journey(n, day=(n // 3) % 3) for n in range(60)], [10]):
        part.write_batch(batch)
    part.close()
    location, files = archive_files(str(tmp_path), None, "2026-01-02", "2026-01-03")
    assert location == archive_location(str(tmp_path))
    assert sorted(files) == ["t0", "t1", "t2"]
    for tenant, paths in files.items():
        assert paths == sorted(paths) and all(f"/tenant_id={tenant}/date=2026-01-0" in p for p in paths)
        assert not any("date=2026-01-01" in p for p in paths)
        table = pq.read_table(paths, filesystem=location.filesystem, schema=ARCHIVE_SCHEMA)
        expected = [j for n in range(60) if (j := journey(n, day=(n // 3) % 3)).tenant_id == tenant and n_day(j)]
        assert sorted(table["journey_id"].to_pylist()) == ids(expected)
    _, files = archive_files(str(tmp_path), "t1", "2026-01-01", "2026-01-01")
    assert list(files) == ["t1"] and all("date=2026-01-01" in p for p in files["t1"])
    assert archive_files(str(tmp_path), "nobody")[1] == {}


def test_a_relative_path_is_a_local_directory_created_on_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    part = build("archive/journeys")
    assert (tmp_path / "archive" / "journeys").is_dir()
    part.write_batch(journeys(2))
    part.close()
    assert len(archived_ids(tmp_path / "archive" / "journeys")) == 2


# --- flushes --------------------------------------------------------------------


def test_rows_are_flushed_once_flush_rows_wait(tmp_path: Path) -> None:
    part = build(tmp_path, flush_rows=5)
    part.write_batch(journeys(3))
    part.write_batch(journeys(1, start=3))
    assert parquet_files(tmp_path) == [] and part.pending_rows == 4
    part.write_batch(journeys(3, start=4))  # 7 wait: all are written, more than flush_rows in one flush
    assert part.pending_rows == 0 and part.flushes == 1
    assert archived_ids(tmp_path) == ids(journeys(7))
    assert {Path(p).name for p in parquet_files(tmp_path)} == {file_name("archive", 0)}


def test_rows_are_flushed_once_the_oldest_is_flush_age_s_old(tmp_path: Path) -> None:
    clock = FakeClock()
    part = build(tmp_path, clock=clock, flush_age_s=60.0)
    part.write_batch(journeys(1))
    clock.advance(59.9)
    part.write_batch(journeys(1, start=1))  # the oldest waited 59.9 s: not yet
    assert part.snapshot().pending_rows == 2 and parquet_files(tmp_path) == []
    clock.advance(0.1)
    part.write_batch(journeys(1, start=2))
    assert part.pending_rows == 0 and archived_ids(tmp_path) == ids(journeys(3))

    clock.advance(30)
    part.write_batch(journeys(1, start=3))  # the age restarts with the first row after a flush
    clock.advance(59)
    assert part.snapshot().pending_rows == 1
    clock.advance(1)
    snap = part.snapshot()  # a snapshot flushes what is too old, then has nothing pending
    assert (snap.next_seq, snap.pending_rows, snap.pending) == (2, 0, ())
    assert archived_ids(tmp_path) == ids(journeys(4))


def test_the_snapshot_keeps_unflushed_rows_small_and_a_resume_writes_them(tmp_path: Path) -> None:
    part = build(tmp_path, flush_rows=1000)
    part.write_batch(journeys(999))
    snap = part.snapshot()
    assert (snap.next_seq, snap.pending_rows) == (0, 999) and parquet_files(tmp_path) == []
    assert len(pickle.dumps(snap)) < 100 * 999, "rows are kept as compressed Arrow, not objects"
    assert part.snapshot() is snap, "an unchanged partition does not encode its rows again"
    resumed = build(tmp_path, pickle.loads(pickle.dumps(snap)), flush_rows=1000)
    assert resumed.pending_rows == 999
    resumed.write_batch(journeys(1, start=999))  # the 1000th row flushes restored and new rows together
    assert resumed.pending_rows == 0 and resumed.files_written == 6
    assert archived_ids(tmp_path) == ids(journeys(1000))


def test_after_every_write_fewer_than_flush_rows_rows_wait(tmp_path: Path) -> None:
    part = build(tmp_path, flush_rows=4)
    for batch in batches(journeys(50), [1, 3, 7, 2, 9]):
        part.write_batch(batch)
        assert part.pending_rows < 4 and part.snapshot().pending_rows == part.pending_rows


# --- revisions --------------------------------------------------------------------


def test_files_carry_the_revision_and_a_flush_keeps_only_the_highest_of_a_journey(tmp_path: Path) -> None:
    part = build(tmp_path)
    part.write_batch([restated(1, 0), restated(1, 2), journey(1)])
    part.write_batch([restated(1, 1), replace(restated(1, 0), tenant_id="other")])  # a lower revision after
    part.close()
    assert (part.rows_written, part.superseded) == (3, 2)
    rows = {(r["tenant_id"], r["journey_id"]): r for r in read_archive(str(tmp_path), latest=False).to_pylist()}
    assert {k: (r["revision"], len(r["touches"])) for k, r in rows.items()} == {
        ("t2", "converted:o2"): (2, 3),
        ("other", "converted:o2"): (0, 1),  # another tenant's journey
        ("t1", "p1/x1"): (0, 1),
    }
    (path,) = (tmp_path / "tenant_id=t2").rglob("*.parquet")
    assert pq.read_table(path).schema.field("revision") == pa.field("revision", pa.int32(), nullable=False)


def test_a_revision_flushed_earlier_stays_and_the_reader_picks_the_latest(tmp_path: Path) -> None:
    part = build(tmp_path, flush_rows=1)
    part.write_batch([restated(1, 0)])
    part.write_batch([restated(1, 1)])
    part.close()
    assert (part.rows_written, part.superseded, part.flushes) == (2, 0, 2)
    assert [(r["revision"], len(r["touches"])) for r in read_archive(str(tmp_path)).to_pylist()] == [(1, 2)]
    assert sorted(read_archive(str(tmp_path), latest=False)["revision"].to_pylist()) == [0, 1]


# --- exactly once across crashes ------------------------------------------------


def test_a_crash_after_a_snapshot_is_repaired_and_the_replay_writes_each_journey_once(tmp_path: Path) -> None:
    items = journeys(40)
    part = build(tmp_path, flush_rows=7)
    part.write_batch(items[:5])
    part.write_batch(items[5:12])  # 12 wait: flush seq 0
    part.write_batch(items[12:15])  # 3 wait
    snap = part.snapshot()
    assert (snap.next_seq, snap.pending_rows) == (1, 3)
    part.write_batch(items[15:22])  # flush seq 1 (10 rows, 3 of them from before the snapshot)
    part.write_batch(items[22:30])  # flush seq 2
    after_snapshot = [p for p in parquet_files(tmp_path) if not p.endswith(file_name("archive", 0))]
    assert after_snapshot, "the crashed run wrote files after its snapshot"
    del part  # crash: no snapshot, no close

    again = build(tmp_path, snap, flush_rows=7)
    assert again.deleted_files == len(after_snapshot)
    assert all(p.endswith(file_name("archive", 0)) for p in parquet_files(tmp_path))
    for batch in batches(items[15:], [1, 4, 13]):  # the replay, batched differently
        again.write_batch(batch)
    again.close()
    assert archived_ids(tmp_path) == ids(items)
    assert temp_files(tmp_path) == []


def test_a_crash_in_the_middle_of_a_flush_is_repaired(tmp_path: Path) -> None:
    items = journeys(30)
    fs, handler = faulty_filesystem()
    settings = ArchiveSettings(str(tmp_path), flush_rows=10, write_retries=0)
    part = ParquetArchiveSink(settings, filesystem=fs).build_part("archive", SINK_PARTITION, None)
    part.write_batch(items[:10])  # seq 0: six (tenant, date) files
    snap = part.snapshot()
    first = len(handler.opened)
    handler.fail = lambda n, path: n == first + 1  # the second file of the next flush breaks half-way
    with pytest.raises(ArchiveError, match=r"failed writing .*part-archive-0000000001.parquet .* after 1 attempts"):
        part.write_batch(items[10:20])
    assert len(parquet_files(tmp_path)) == first + 1, "one file of the interrupted flush landed"
    assert temp_files(tmp_path) == [], "the failed file's temporary copy was removed"

    handler.fail = lambda n, path: False
    again = ParquetArchiveSink(settings, filesystem=fs).build_part("archive", SINK_PARTITION, snap)
    assert again.deleted_files == 1
    for batch in batches(items[10:], [3, 17]):
        again.write_batch(batch)
    again.close()
    assert archived_ids(tmp_path) == ids(items)


def test_a_resume_removes_temporary_leftovers_and_a_fresh_start_keeps_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    part = build(tmp_path)
    part.write_batch(journeys(3))
    snap = part.snapshot()
    part.close()
    leftover = tmp_path / "tenant_id=t0" / "date=2026-01-01" / "_part-archive-0000000001.parquet.tmp"
    leftover.write_bytes(b"half a file")
    other_partition = tmp_path / "tenant_id=t0" / "date=2026-01-01" / "_part-other-0000000001.parquet.tmp"
    other_partition.write_bytes(b"not ours")
    assert archived_ids(tmp_path) == ids(journeys(3)), "readers skip temporary files"

    with caplog.at_level(logging.WARNING, logger="creditflow.sinks.parquet_archive"):
        build(tmp_path)
    assert leftover.exists() and "keeps 1 temporary files" in caplog.text

    resumed = build(tmp_path, replace(snap, next_seq=1, pending=b"", pending_rows=0))
    assert not leftover.exists() and other_partition.exists() and resumed.deleted_files == 1
    assert archived_ids(tmp_path) == ids(journeys(3))


def test_a_fresh_start_over_an_existing_archive_deletes_nothing_and_continues_the_seq(tmp_path: Path) -> None:
    first = build(tmp_path, flush_rows=4)
    for batch in batches(journeys(10), [4]):
        first.write_batch(batch)
    first.close()  # seq 0, 1 and 2 (the last two rows)
    before = {p: (tmp_path / p).read_bytes() for p in parquet_files(tmp_path)}
    (tmp_path / "tenant_id=t0" / "date=2026-01-01" / file_name("other", 99)).write_bytes(b"another writer's file")

    second = build(tmp_path, flush_rows=4)
    assert second.next_seq == 3 and second.deleted_files == 0
    second.write_batch(journeys(4, start=10))
    second.close()
    assert all((tmp_path / p).read_bytes() == data for p, data in before.items())
    assert {p.rsplit("-", 1)[1] for p in parquet_files(tmp_path) if p not in before and "other" not in p} == {
        "0000000003.parquet"
    }
    (tmp_path / "tenant_id=t0" / "date=2026-01-01" / file_name("other", 99)).unlink()
    assert archived_ids(tmp_path) == ids(journeys(14))


def test_the_same_store_restarting_before_its_first_snapshot_rewrites_its_files_once(tmp_path: Path) -> None:
    history = build(tmp_path, flush_rows=4, lineage="old-store")  # an earlier store's files are history
    for batch in batches(journeys(8), [4]):
        history.write_batch(batch)
    history.close()  # seq 0, 1
    crashed = build(tmp_path, flush_rows=4, lineage="store-a")  # a new store begins at seq 2 ...
    assert crashed.next_seq == 2 and crashed.deleted_files == 0
    for batch in batches(journeys(10, start=8), [4]):
        crashed.write_batch(batch)  # ... flushes seq 2 and 3, then dies before any snapshot
    crashed_files = [p for p in parquet_files(tmp_path) if int(p.rsplit("-", 1)[1][:10]) >= 2]
    restarted = build(tmp_path, flush_rows=4, lineage="store-a")  # no resume state: Bytewax replays everything
    assert (restarted.next_seq, restarted.deleted_files) == (2, len(crashed_files)) and crashed_files
    for batch in batches(journeys(10, start=8), [3, 5]):
        restarted.write_batch(batch)
    restarted.close()
    assert archived_ids(tmp_path) == ids(journeys(18))  # the history kept, the replay written once


def test_without_a_lineage_a_start_without_snapshot_deletes_nothing(tmp_path: Path) -> None:
    first = build(tmp_path, flush_rows=2)
    first.write_batch(journeys(4))
    again = build(tmp_path, flush_rows=2)
    assert (again.next_seq, again.deleted_files) == (1, 0)
    assert not (tmp_path / "_lineage").exists()


def run_with_crashes(data: st.DataObject, items: Sequence[ClosedJourney], root: str) -> None:
    """Runs of epochs (batches, then a snapshot); a run may crash anywhere after the first snapshot.

    Each run resumes from the last snapshot and replays what followed it, cut into other
    batches and epochs; the clock moves by random steps (age flushes). The last run ends
    with ``close()``.
    """
    count = len(items)
    flush_rows = data.draw(st.integers(1, 9), label="flush_rows")
    crashes = data.draw(st.integers(0, 3), label="crashes")
    clock = FakeClock()
    resume: ArchiveResume | None = None
    done = 0  # items the last snapshot covers
    for run in range(crashes + 1):
        part = build(root, resume, clock, flush_rows=flush_rows, flush_age_s=10.0)
        pos = done
        crashed = False
        while pos < count and not crashed:
            epoch = data.draw(st.integers(1, count - pos), label="epoch size")
            sizes = data.draw(st.lists(st.integers(1, 8), min_size=1, max_size=4), label="batch sizes")
            for batch in batches(items[pos : pos + epoch], sizes):
                clock.advance(data.draw(st.sampled_from([0.0, 3.0, 11.0]), label="wait"))
                part.write_batch(batch)
            pos += epoch
            if run < crashes and resume is not None and data.draw(st.booleans(), label="crash before snapshot"):
                crashed = True
            else:
                resume, done = part.snapshot(), pos
        if run == crashes or data.draw(st.booleans(), label="close on abort"):
            part.close()  # the end, or Bytewax dropping the partition after an abort
        # else: killed here (mid-epoch or after the run's last snapshot)


@hypothesis_settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_every_journey_once_whatever_the_crashes_batches_and_flushes(data: st.DataObject) -> None:
    """After crashes and replays (:func:`run_with_crashes`) the archive holds each journey exactly once."""
    items = journeys(data.draw(st.integers(1, 40), label="journeys"))
    with tempfile.TemporaryDirectory() as root:
        run_with_crashes(data, items, root)
        assert archived_ids(root) == ids(items)
        assert temp_files(Path(root)) == []


def restated(conversion: int, revision: int) -> ClosedJourney:
    """Revision ``revision`` of a converted journey: one touch more per revision, same close."""
    base = journey(2 * conversion, touches=revision + 1)
    return replace(base, journey_id=f"converted:o{2 * conversion}", revision=revision)


@hypothesis_settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_each_revision_at_most_once_and_the_highest_always(data: st.DataObject) -> None:
    """Restated conversions through crashes and replays: the latest read is each one's highest revision.

    Revisions reach the sink in any order, several in one flush or not; every row in the
    archive is one the flow emitted, no (journey_id, revision) is there twice.
    """
    emitted = data.draw(
        st.lists(st.tuples(st.integers(0, 5), st.integers(0, 4)), min_size=1, max_size=30, unique=True),
        label="(conversion, revision)",
    )
    items = [restated(c, r) for c, r in emitted]
    highest: dict[str, ClosedJourney] = {}
    for j in items:
        if j.journey_id not in highest or j.revision > highest[j.journey_id].revision:
            highest[j.journey_id] = j
    with tempfile.TemporaryDirectory() as root:
        run_with_crashes(data, items, root)
        latest = read_archive(root).to_pylist()
        assert sorted((r["journey_id"], r["revision"], len(r["touches"])) for r in latest) == sorted(
            (j.journey_id, j.revision, len(j.touch_channels)) for j in highest.values()
        )
        every = read_archive(root, latest=False)
        pairs = list(zip(every["journey_id"].to_pylist(), every["revision"].to_pylist(), strict=True))
        assert len(pairs) == len(set(pairs)) and set(pairs) <= {(j.journey_id, j.revision) for j in items}
        assert temp_files(Path(root)) == []


# --- atomic writes and I/O errors --------------------------------------------------


def test_a_failed_write_leaves_no_visible_file(tmp_path: Path) -> None:
    fs, handler = faulty_filesystem(lambda n, path: True)
    settings = ArchiveSettings(str(tmp_path), write_retries=0)
    part = ParquetArchiveSink(settings, filesystem=fs).build_part("archive", SINK_PARTITION, None)
    part.write_batch(journeys(1))
    with pytest.raises(ArchiveError, match="No space left on device .simulated.. Check the filesystem"):
        part.close()
    assert handler.opened and all(Path(p).name.startswith("_") for p in handler.opened), "written under a temp name"
    assert handler.moved == []
    assert parquet_files(tmp_path) == [] and temp_files(tmp_path) == []
    assert read_archive(str(tmp_path)).num_rows == 0


def test_a_failed_write_is_retried_with_doubling_waits(tmp_path: Path) -> None:
    fs, handler = faulty_filesystem(lambda n, path: n < 2)
    waits: list[float] = []
    settings = ArchiveSettings(str(tmp_path), write_retries=2, retry_backoff_s=0.5)
    sink = ParquetArchiveSink(settings, filesystem=fs, sleep=waits.append)
    part = sink.build_part("archive", SINK_PARTITION, None)
    part.write_batch([journey(1, tenant="acme")])
    part.close()
    assert waits == [0.5, 1.0] and len(handler.opened) == 3
    assert archived_ids(tmp_path) == ids([journey(1, tenant="acme")])


def test_object_stores_get_one_put_of_the_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_module, "SINGLE_PUT_FILESYSTEMS", frozenset({"py::objectstore"}))
    fs, handler = faulty_filesystem(lambda n, path: n == 1, name="objectstore", object_store=True)
    settings = ArchiveSettings(str(tmp_path), flush_rows=1, write_retries=0)
    part = ParquetArchiveSink(settings, filesystem=fs).build_part("archive", SINK_PARTITION, None)
    part.write_batch([journey(1, tenant="acme")])  # one file, put directly under its final name
    final = "tenant_id=acme/date=2026-01-02/" + file_name("archive", 0)
    assert handler.opened == [str(tmp_path / final)] and handler.moved == []
    with pytest.raises(ArchiveError, match="part-archive-0000000001.parquet"):
        part.write_batch([journey(3, tenant="acme")])  # the put fails half-way: what landed is removed
    assert parquet_files(tmp_path) == [final]


# --- bad input --------------------------------------------------------------------


BAD_ITEMS: list[tuple[Any, str, str]] = [
    ({"journey_id": "x"}, "not_a_closed_journey", "got a dict"),
    (None, "not_a_closed_journey", "got a NoneType"),
    (replace(journey(1), touch_channels=("email",), touch_ts_ms=(T0, T0 + 1)), "bad_touches", "1 touch channels but 2"),
    (replace(journey(3), touch_ts_ms=(T0, "later", T0)), "bad_touches", "a touch time is not epoch ms"),  # type: ignore[arg-type]
    (replace(journey(1), touch_channels=None), "bad_touches", "touch_channels and touch_ts_ms must be tuples"),  # type: ignore[arg-type]
    (replace(journey(1), outcome="lost"), "bad_field", "outcome='lost' is not one of"),
    (replace(journey(1), tenant_id=7), "bad_field", "tenant_id=7 is not valid Unicode text"),  # type: ignore[arg-type]
    (replace(journey(1), person_id="bad \udcff"), "bad_field", "person_id="),
    (replace(journey(1), tenant_id="t" * 300), "bad_field", "tenant_id is too long for a directory name"),
    (replace(journey(1), closed_at_ms=-1), "bad_field", "closed_at_ms=-1 is not epoch ms"),
    (replace(journey(1), closed_at_ms=float(T0)), "bad_field", "closed_at_ms="),  # type: ignore[arg-type]
    (replace(journey(1), value=float("nan")), "bad_field", "value=nan is not a finite number"),
    (replace(journey(2), revision=-1), "bad_field", "revision=-1 is not an int between 0 and 2147483647"),
    (replace(journey(2), revision=2**31), "bad_field", "revision=2147483648 is not an int"),
    (replace(journey(2), revision="1"), "bad_field", "revision='1' is not an int"),  # type: ignore[arg-type]
    (replace(journey(2), revision=True), "bad_field", "revision=True is not an int"),
]


def test_bad_items_are_logged_and_counted_not_written(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    part = build(tmp_path)
    good = journeys(4)
    mixed: list[Any] = [good[0], *(item for item, _, _ in BAD_ITEMS[:6]), good[1]]
    rest: list[Any] = [item for item, _, _ in BAD_ITEMS[6:]]
    with caplog.at_level(logging.WARNING, logger="creditflow.sinks.parquet_archive"):
        part.write_batch(mixed)
        part.write_batch(rest + good[2:])
        part.close()
    assert archived_ids(tmp_path) == ids(good)
    assert part.rejected == len(BAD_ITEMS)
    assert part.rejected_by_reason == dict(Counter(reason for _, reason, _ in BAD_ITEMS))
    for _, reason, detail in BAD_ITEMS:
        assert f"({reason}: {detail}" in caplog.text
    assert "fix it there" in caplog.text


def test_a_flood_of_bad_items_is_logged_sparsely(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    part = build(tmp_path)
    with caplog.at_level(logging.WARNING, logger="creditflow.sinks.parquet_archive"):
        part.write_batch(cast(list[ClosedJourney], ["junk"] * 3000))
    assert part.rejected == 3000
    assert len(caplog.records) == 20 + 3  # the first 20, then the 1000th, 2000th and 3000th


# --- settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"uri": ""}, "ArchiveSettings.uri='' is empty: give a directory"),
        ({"uri": "ftp://host/archive"}, "unsupported scheme 'ftp': use a directory path or one of abfs://"),
        ({"uri": "x", "flush_rows": 0}, "flush_rows=0 must be an int >= 1"),
        ({"uri": "x", "flush_rows": 2.5}, "flush_rows=2.5 must be an int >= 1"),
        ({"uri": "x", "flush_age_s": 0}, "flush_age_s=0 must be a finite number of seconds > 0"),
        ({"uri": "x", "flush_age_s": float("inf")}, "flush_age_s=inf must be a finite number"),
        ({"uri": "x", "flush_age_s": "60"}, "flush_age_s='60' must be a finite number"),
        ({"uri": "x", "write_retries": -1}, "write_retries=-1 must be an int >= 0"),
        ({"uri": "x", "retry_backoff_s": -1.0}, "retry_backoff_s=-1.0 must be a finite number of seconds >= 0"),
    ],
)
def test_settings_say_what_is_wrong_and_how_to_fix_it(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ArchiveError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ArchiveSettings(**kwargs)  # type: ignore[arg-type]


def test_settings_accept_uris_and_mask_credentials() -> None:
    for uri in ("/var/archive", "relative/dir", "file:///var/archive", "s3://bucket/prefix", "gs://b/p"):
        assert ArchiveSettings(uri).uri == uri
    shown = repr(ArchiveSettings("s3://AKIAKEY:sEcReT@bucket/prefix"))
    assert "sEcReT" not in shown and "AKIAKEY:***@bucket/prefix" in shown


def test_a_snapshot_from_before_revisions_resumes_with_revision_0(tmp_path: Path) -> None:
    """A snapshot's pending rows encoded by the version without the ``revision`` column."""
    old_rows = archive_module._journeys_table(journeys(5)).drop_columns(["revision"])
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, old_rows.schema, options=options) as writer:
        writer.write_table(old_rows)
    old = ArchiveResume(next_seq=0, pending=(sink.getvalue().to_pybytes(),), pending_rows=5)
    resumed = build(tmp_path, old)
    assert resumed.pending_rows == 5
    resumed.write_batch([restated(1, 3)])
    again = build(tmp_path, resumed.snapshot())  # the old segment is kept as it was, and read again
    again.close()
    table = read_archive(str(tmp_path), latest=False)
    assert sorted(zip(table["journey_id"].to_pylist(), table["revision"].to_pylist(), strict=True)) == sorted(
        [(j.journey_id, 0) for j in journeys(5)] + [("converted:o2", 3)]
    )


def test_an_incompatible_snapshot_is_refused_with_a_fix(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="cannot read the pending rows of its resume state"):
        build(tmp_path, ArchiveResume(next_seq=3, pending=b"garbage", pending_rows=1))


# --- inside a real dataflow -----------------------------------------------------------


def archive_flow(items: list[object], sink: ParquetArchiveSink, batch_size: int = 3) -> Dataflow:
    flow = Dataflow("parquet_archive_test")
    closed: Any = op.input("closed", flow, TestingSource(items, batch_size=batch_size))
    op.output("archive", closed, sink)
    return flow


def test_the_sink_in_a_dataflow_writes_every_valid_journey(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = journeys(25)
    items: list[object] = [(j.tenant_id, j) for j in good]
    items[7:7] = [("t0", "not a journey"), ("t1", BAD_ITEMS[2][0])]
    with caplog.at_level(logging.INFO, logger="creditflow.sinks.parquet_archive"):
        run_main(archive_flow(items, ParquetArchiveSink(ArchiveSettings(str(tmp_path), flush_rows=4))))
    assert archived_ids(tmp_path) == ids(good)
    assert "closed: 25 rows in" in caplog.text and "2 items rejected" in caplog.text


def test_the_sink_with_two_workers_has_one_writer(tmp_path: Path) -> None:
    good = journeys(30)
    sink = ParquetArchiveSink(ArchiveSettings(str(tmp_path), flush_rows=4))
    cluster_main(archive_flow([(j.tenant_id, j) for j in good], sink), [], 0, worker_count_per_proc=2)
    assert archived_ids(tmp_path) == ids(good)


def test_abort_and_resume_in_a_dataflow_writes_each_journey_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two aborts, each after rows were buffered past the last snapshot; the resumes repair the archive.

    Bytewax 0.21 calls ``close()`` when it drops the partition after an abort, so the rows
    pending then are flushed into files past the snapshot: the resume must delete them.
    Each run gets a list with only the aborts still to come: ``TestingSource`` does not count
    a triggered ``ABORT`` it skips in its resume position, so keeping one shifts the replay.
    """
    recovery_dir = tmp_path / "recovery"
    recovery_dir.mkdir()
    init_db_dir(recovery_dir, 1)
    root = tmp_path / "archive"
    good = journeys(40)
    pairs: list[object] = [(j.tenant_id, j) for j in good]
    runs = [
        [*pairs[:14], TestingSource.ABORT(), *pairs[14:]],
        [*pairs[:29], TestingSource.ABORT(), *pairs[29:]],
        pairs,
    ]
    with caplog.at_level(logging.INFO, logger="creditflow.sinks.parquet_archive"):
        for items in runs:
            sink = ParquetArchiveSink(ArchiveSettings(str(root), flush_rows=7))
            run_main(
                archive_flow(items, sink, batch_size=4),
                epoch_interval=timedelta(0),
                recovery_config=RecoveryConfig(str(recovery_dir)),
            )
    assert archived_ids(root) == ids(good)
    assert temp_files(root) == []
    removed = [int(n) for n in re.findall(r"resumed; (\d+) files removed", caplog.text)]
    assert len(removed) == 2 and all(removed), "both resumes deleted files written after their snapshot"


def test_a_snapshot_encodes_only_the_rows_new_since_the_last_one(tmp_path: Path) -> None:
    part = build(tmp_path, flush_rows=1000)
    part.write_batch(journeys(10))
    first = part.snapshot().pending
    part.write_batch(journeys(5, start=10))
    second = part.snapshot().pending
    assert isinstance(first, tuple) and second[: len(first)] == first and len(second) == len(first) + 1
    resumed = build(tmp_path, ArchiveResume(part.next_seq, second, 15), flush_rows=1000)
    resumed.close()
    assert archived_ids(tmp_path) == ids(journeys(15))


def test_parcels_of_journeys_are_archived_like_single_journeys(tmp_path: Path) -> None:
    """flows.attribution sends a batch's journeys as parcels per tenant (operators.parcels): lists."""
    part = build(tmp_path)
    part.write_batch([[journey(1, tenant="acme", day=0), journey(2, tenant="acme", day=0)], journey(3, day=0)])
    part.close()
    assert part.rows_written == 3
