"""Right to be forgotten in the Parquet archive: the sink's erasures and the ``forget_in_archive`` sweep.

A ``ForgetPerson`` reaching the archive sink drops the person's waiting journeys at
once (so no later snapshot holds them) and rewrites the files already written at the
next snapshot; the sweep does the same for a whole suppression list. Everything is
real files under ``tmp_path``, read back with pyarrow and as raw bytes; file faults
and concurrent writers are simulated with pyarrow ``PyFileSystem`` handlers.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import sinks.parquet_archive as archive_module
from creditflow.events import ClosedJourney
from creditflow.forgotten import ForgetPerson, ForgottenIds
from sinks.archive_forget import forget_in_archive
from sinks.archive_reader import read_archive
from sinks.parquet_archive import (
    ARCHIVE_SCHEMA,
    READ_SCHEMA,
    SINK_PARTITION,
    ArchiveError,
    ArchiveForgetReport,
    ArchiveResume,
    ArchiveSettings,
    ParquetArchivePartition,
    ParquetArchiveSink,
)
from tests.sinks.archive_faults import FaultyFileSystem, faulty_filesystem
from tests.sinks.archive_rows import OLD_SCHEMA, write_old_file
from tests.sinks.test_parquet_archive import run_with_crashes

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
ANN = "u:ann-7f3a9c"  # distinctive, so a raw-bytes search finds nothing else
BOB = "u:bob-51d2e0"
CARL = "d:carl-phone"
ZED = "a:zed-0c44"
YURI = "a:yuri-9b1e"


def trip(person: str, n: int, tenant: str = "acme", day: int = 0, revision: int = 0) -> ClosedJourney:
    """Converted journey ``n`` of ``person``: one or two touches, more with each revision."""
    closed = T0 + day * DAY + 1000 * n
    k = n % 2 + 1 + revision
    return ClosedJourney(
        tenant_id=tenant,
        person_id=person,
        journey_id=f"{person}/o{n}",
        outcome="converted",
        closed_at_ms=closed,
        conversion_id=f"o{n}",
        value=10.0 + n,
        touch_channels=tuple(("email", "display", "paid_search")[i % 3] for i in range(k)),
        touch_ts_ms=tuple(closed - 60_000 * (k - i) for i in range(k)),
        revision=revision,
    )


def forget(person: str, tenant: str = "acme") -> ForgetPerson:
    return ForgetPerson(tenant, person, "f1:" + "0" * 32, T0 + 5 * DAY)


def build(root: Path, resume: ArchiveResume | None = None, fs: Any = None, **settings: Any) -> ParquetArchivePartition:
    sink = ParquetArchiveSink(ArchiveSettings(str(root), **settings), filesystem=fs)
    return sink.build_part("archive", SINK_PARTITION, resume)


def run(root: Path, *flushes: list[ClosedJourney], **settings: Any) -> None:
    """Each list written by its own run and flush, as another run of the flow would have."""
    for rows in flushes:
        part = build(root, **settings)
        part.write_batch(rows)
        part.close()


def rows(root: Path, tenant: str | None = None) -> list[tuple[str, str, str, int]]:
    table = read_archive(str(root), tenant, latest=False)
    cols = [table[c].to_pylist() for c in ("tenant_id", "person_id", "journey_id", "revision")]
    return sorted(zip(*cols, strict=True))


def expected_rows(items: Iterable[ClosedJourney]) -> list[tuple[str, str, str, int]]:
    return sorted((j.tenant_id, j.person_id, j.journey_id, j.revision) for j in items)


def data_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def every_file(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def holding(root: Path, person: str) -> list[str]:
    """Files anywhere under ``root`` whose raw bytes contain ``person``."""
    return [str(p.relative_to(root)) for p in every_file(root) if person.encode() in p.read_bytes()]


def persons_in(path: Path) -> set[str]:
    return set(pq.ParquetFile(path).read(columns=["person_id"])["person_id"].to_pylist())


def snapshot_rows(snap: ArchiveResume) -> list[tuple[str, str]]:
    segments = (snap.pending,) if isinstance(snap.pending, bytes) else snap.pending
    out: list[tuple[str, str]] = []
    for segment in segments:
        table = archive_module._decode_pending(segment, "test")
        out.extend(zip(table["tenant_id"].to_pylist(), table["person_id"].to_pylist(), strict=True))
    return sorted(out)


# --- the sink: waiting rows --------------------------------------------------------


def test_waiting_journeys_of_a_forgotten_person_never_reach_a_file_nor_a_snapshot(tmp_path: Path) -> None:
    part = build(tmp_path)  # flush_rows 50,000: nothing is flushed here
    part.write_batch([trip(ANN, 1), trip(BOB, 2), trip(ANN, 3, tenant="globex")])
    before = part.snapshot()  # ann's first row is now an encoded snapshot segment
    assert ("acme", ANN) in snapshot_rows(before) and ANN.encode() in pickle.dumps(before)
    part.write_batch([trip(ANN, 4), trip(BOB, 5)])  # still Python rows
    part.write_batch([trip(BOB, 6), forget(ANN), trip(ANN, 7, revision=1)])  # ann before and after the request
    part.write_batch([trip(ANN, 8)])  # later in the same epoch
    assert (part.pending_rows, part.erased_pending) == (4, 4)
    assert list(tmp_path.rglob("*.parquet")) == []

    snap = part.snapshot()
    assert snapshot_rows(snap) == sorted([("acme", BOB)] * 3 + [("globex", ANN)]), "another tenant's ann stays"
    assert snap.pending_rows == 4
    pickled = pickle.dumps(snap)
    assert b"acme" in pickled and ANN.encode() in pickled  # globex's ann: the raw search does see names
    assert ANN.encode() not in pickle.dumps(replace_globex(snap)), "no trace of acme's ann in the snapshot"

    resumed = build(tmp_path, pickle.loads(pickled))
    resumed.close()
    assert rows(tmp_path) == expected_rows([trip(BOB, 2), trip(BOB, 5), trip(BOB, 6), trip(ANN, 3, tenant="globex")])

    part.write_batch([trip(ANN, 9)])  # the next epoch: the erasure ended with the snapshot (the flow's
    assert part.pending_rows == 5  # suppression list, not the sink, keeps a forgotten person's events out)


def replace_globex(snap: ArchiveResume) -> ArchiveResume:
    """``snap`` with globex's rows dropped, so a raw search for ann can only find acme's."""
    segments = (snap.pending,) if isinstance(snap.pending, bytes) else snap.pending
    kept = []
    for segment in segments:
        table = archive_module._decode_pending(segment, "test")
        kept.append(archive_module._encode_pending(table.filter(pc.equal(table["tenant_id"], "acme"))))
    return ArchiveResume(snap.next_seq, tuple(kept), 0)


def test_a_snapshot_after_the_erasure_keeps_unchanged_segments_and_encodes_changed_ones_again(tmp_path: Path) -> None:
    part = build(tmp_path)
    part.write_batch([trip(BOB, 1), trip(CARL, 2)])
    first = part.snapshot().pending
    part.write_batch([trip(ANN, 3), trip(BOB, 4)])
    second = part.snapshot().pending
    part.write_batch([forget(ANN)])
    third = part.snapshot().pending
    assert isinstance(first, tuple) and isinstance(second, tuple) and isinstance(third, tuple)
    assert third[0] is first[0] and third[1] != second[1] and len(third) == 2
    part.write_batch([forget(BOB), forget(CARL)])  # every waiting row goes: no segment is left
    assert part.snapshot() == ArchiveResume(0, (), 0) and part.pending_rows == 0


# --- the sink: files already written -------------------------------------------------


def written_archive(root: Path) -> list[ClosedJourney]:
    """Three runs and an old file: ann in several files, dates and revisions; others around her."""
    first = [trip(ANN, 1), trip(BOB, 2), trip(ANN, 3, day=1), trip(CARL, 4, day=1), trip(ANN, 5, tenant="globex")]
    second = [trip(ANN, 1, revision=1), trip(BOB, 2, revision=1)]  # restatements, in files of their own
    third = [trip(CARL, 6, day=2)]  # a file without ann
    run(root, first, second, third)
    old = [trip(ZED, 7), trip(ANN, 8)]
    write_old_file(root, old, seq=50)  # before revisions existed: no revision column
    return first + second + third + old


def test_files_already_written_lose_exactly_the_forgotten_persons_rows_at_the_next_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written = written_archive(tmp_path)
    before = data_files(tmp_path)
    tables = {name: pq.ParquetFile(tmp_path / name).read() for name in before}
    with_ann = sorted(n for n in before if n.startswith("tenant_id=acme/") and ANN in persons_in(tmp_path / n))
    assert len(with_ann) == 4 and all(ANN.encode() in before[n] for n in with_ann), "the raw search sees her"
    mtimes = {n: (tmp_path / n).stat().st_mtime_ns for n in before}

    part = build(tmp_path)
    part.write_batch([forget(ANN)])
    assert data_files(tmp_path) == before, "files are rewritten at the snapshot, not on every batch"
    with caplog.at_level(logging.INFO, logger="creditflow.sinks.parquet_archive"):
        part.snapshot()

    after = data_files(tmp_path)
    assert sorted(after) == sorted(before), "same names: no file of the archive was left empty"
    for name, table in tables.items():
        if name in with_ann:
            expected = table.filter(pc.not_equal(table["person_id"], ANN))
            now = pq.ParquetFile(tmp_path / name).read()
            assert now.equals(expected, check_metadata=True), f"{name}: other rows, order and columns as they were"
            assert now.schema == table.schema
            columns = pq.ParquetFile(tmp_path / name).metadata.row_group(0)
            assert {columns.column(i).compression for i in range(columns.num_columns)} == {"ZSTD"}
        else:
            assert after[name] == before[name] and (tmp_path / name).stat().st_mtime_ns == mtimes[name]
    assert pq.read_schema(tmp_path / "tenant_id=acme/date=2026-01-01/part-archive-0000000050.parquet") == OLD_SCHEMA
    assert pq.read_schema(tmp_path / with_ann[0]) == ARCHIVE_SCHEMA  # revision still non-null int32

    kept = [j for j in written if not (j.tenant_id == "acme" and j.person_id == ANN)]
    assert rows(tmp_path) == expected_rows(kept)  # bob's two revisions, globex's ann, zed of the old file
    latest = read_archive(str(tmp_path), "acme")
    assert latest.schema == READ_SCHEMA and sorted(latest["journey_id"].to_pylist()) == sorted(
        {j.journey_id for j in kept if j.tenant_id == "acme"}
    )
    assert part.erased_in_files == ArchiveForgetReport(
        files_scanned=5, files_rewritten=4, files_deleted=0, rows_removed=4
    )
    assert [p for p in every_file(tmp_path) if p.name.endswith(".tmp")] == []
    assert "erased 1 persons: 4 rows removed from 4 files (4 rewritten, 0 deleted, 5 scanned" in caplog.text
    assert ANN not in caplog.text, "logs never name the person"


def test_a_replayed_forget_person_changes_nothing(tmp_path: Path) -> None:
    written_archive(tmp_path)
    part = build(tmp_path)
    part.write_batch([trip(BOB, 20)])
    earlier = part.snapshot()
    part.write_batch([trip(ANN, 21), forget(ANN)])
    done = part.snapshot()
    erased = data_files(tmp_path)

    again = build(tmp_path, done)  # the same request once more, e.g. from another process
    again.write_batch([forget(ANN)])
    again.snapshot()
    assert data_files(tmp_path) == erased
    assert again.erased_in_files == ArchiveForgetReport(files_scanned=5)

    replayed = build(tmp_path, earlier)  # a crash after the erasure: the replay from the snapshot before
    replayed.write_batch([trip(ANN, 21), forget(ANN)])
    replayed.close()
    assert ANN not in {p for _, p, _, _ in rows(tmp_path, "acme")}
    assert rows(tmp_path, "acme").count(("acme", BOB, f"{BOB}/o20", 0)) == 1


def test_a_file_left_empty_is_deleted_and_the_archive_reads_and_restarts(tmp_path: Path) -> None:
    part = build(tmp_path, flush_rows=2, lineage="store-a")
    part.write_batch([trip(BOB, 1), trip(CARL, 2)])  # seq 0
    part.write_batch([trip(ANN, 3, day=1), trip(ANN, 4, day=1)])  # seq 1: ann alone, in 2026-01-02
    assert part.snapshot().next_seq == 2
    part.write_batch([forget(ANN)])
    snap = part.snapshot()
    assert part.erased_in_files == ArchiveForgetReport(files_scanned=2, files_deleted=1, rows_removed=2)
    assert sorted(data_files(tmp_path)) == ["tenant_id=acme/date=2026-01-01/part-archive-0000000000.parquet"]
    assert read_archive(str(tmp_path), "acme", "2026-01-02").num_rows == 0
    assert rows(tmp_path) == expected_rows([trip(BOB, 1), trip(CARL, 2)])

    resumed = build(tmp_path, snap, flush_rows=2, lineage="store-a")  # the flow goes on after a crash
    assert (resumed.next_seq, resumed.deleted_files) == (2, 0)

    fresh = build(tmp_path, flush_rows=2, lineage="store-b")  # a new store over this archive
    assert (fresh.next_seq, fresh.deleted_files) == (1, 0), "continues after the highest file left"
    assert fresh._own_files() == ({str(tmp_path / sorted(data_files(tmp_path))[0]): 0}, [])
    fresh.write_batch([trip(ZED, 5, day=1), trip(ZED, 6, day=1)])  # seq 1 again, a new file; then a crash
    restarted = build(tmp_path, flush_rows=2, lineage="store-b")  # before store-b's first snapshot
    assert (restarted.next_seq, restarted.deleted_files) == (1, 1), "only store-b's own file is replayed"
    restarted.write_batch([trip(ZED, 5, day=1), trip(ZED, 6, day=1)])
    restarted.close()
    assert rows(tmp_path) == expected_rows([trip(BOB, 1), trip(CARL, 2), trip(ZED, 5, day=1), trip(ZED, 6, day=1)])


def test_a_tenant_whose_every_row_is_forgotten_reads_empty(tmp_path: Path) -> None:
    run(tmp_path, [trip(ANN, 1), trip(ANN, 2, day=3)], [trip(BOB, 3, tenant="globex")])
    part = build(tmp_path)
    part.write_batch([forget(ANN)])
    part.close()  # the end of a finite flow erases too
    assert part.erased_in_files.files_deleted == 2
    assert read_archive(str(tmp_path), "acme").num_rows == 0
    assert rows(tmp_path) == expected_rows([trip(BOB, 3, tenant="globex")])


# --- atomic rewrites ------------------------------------------------------------------


def test_a_rewrite_goes_through_a_temporary_file_and_a_failed_one_leaves_the_file_whole(tmp_path: Path) -> None:
    run(tmp_path, [trip(ANN, 1), trip(BOB, 2)])
    original = data_files(tmp_path)
    fs, handler = faulty_filesystem(lambda n, path: path.endswith(".tmp"))
    part = build(tmp_path, fs=fs, write_retries=1, retry_backoff_s=0.0)
    start = part.snapshot()
    part.write_batch([forget(ANN)])
    with pytest.raises(ArchiveError, match=r"failed rewriting .*part-archive-0000000000.parquet .* after 2 attempts"):
        part.snapshot()
    assert data_files(tmp_path) == original and [p for p in every_file(tmp_path) if p.suffix == ".tmp"] == []
    assert rows(tmp_path) == expected_rows([trip(ANN, 1), trip(BOB, 2)])

    handler.fail = lambda n, path: False
    replay = build(tmp_path, start, fs=fs)  # the flow stopped; the replay brings the request again
    replay.write_batch([forget(ANN)])
    replay.snapshot()
    (moved,) = handler.moved
    final = str(tmp_path / "tenant_id=acme/date=2026-01-01/part-archive-0000000000.parquet")
    assert moved[1] == final and Path(moved[0]).name.startswith("_part-archive-0000000000.parquet.")
    assert moved[0].endswith(".tmp") and Path(moved[0]).parent == Path(final).parent
    assert rows(tmp_path) == expected_rows([trip(BOB, 2)])


def test_object_stores_get_one_put_of_the_rewritten_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_module, "SINGLE_PUT_FILESYSTEMS", frozenset({"py::objectstore"}))
    run(tmp_path, [trip(ANN, 1), trip(BOB, 2)])
    fs, handler = faulty_filesystem(name="objectstore", object_store=True)
    part = build(tmp_path, fs=fs)
    part.write_batch([forget(ANN)])
    part.snapshot()
    final = str(tmp_path / "tenant_id=acme/date=2026-01-01/part-archive-0000000000.parquet")
    assert handler.opened == [final] and handler.moved == []
    assert rows(tmp_path) == expected_rows([trip(BOB, 2)])


# --- the sweep ------------------------------------------------------------------------


def salt_of(tenant: str) -> bytes:
    return b"salt-of-" + tenant.encode()


def test_forget_in_archive_removes_forgotten_persons_written_by_another_run_and_reports(tmp_path: Path) -> None:
    run(
        tmp_path,
        [trip(ANN, 1), trip(BOB, 2), trip(ANN, 3, tenant="globex"), trip(ZED, 4, tenant="globex", day=1)],
        [trip(ANN, 5, day=2), trip(ANN, 6, tenant="initech"), trip(ZED, 7, tenant="initech")],
        [trip(ANN, 1, revision=1), trip(CARL, 8)],
    )
    forgotten = ForgottenIds(salt_of)
    forgotten.add("acme", ANN)
    forgotten.add("globex", ZED)
    forgotten.add("umbrella", ANN)  # a tenant without files

    report = forget_in_archive(str(tmp_path), forgotten)
    # acme: 3 files (ann in all three, one holds only her), globex: 2 (zed alone in one); initech not read
    assert report == ArchiveForgetReport(files_scanned=5, files_rewritten=2, files_deleted=2, rows_removed=4)
    assert rows(tmp_path) == expected_rows(
        [trip(BOB, 2), trip(CARL, 8), trip(ANN, 3, tenant="globex"), trip(ANN, 6, tenant="initech")]
        + [trip(ZED, 7, tenant="initech")]
    )
    assert forget_in_archive(f"file://{tmp_path}", forgotten) == ArchiveForgetReport(files_scanned=3)


class ConcurrentWriter(FaultyFileSystem):
    """Local files; the first read of ``path`` finds it already replaced (``replace``) or deleted (None)."""

    def __init__(self, path: str, replace: pa.Table | None) -> None:
        super().__init__()
        self.path, self.replace, self.done = path, replace, False

    def open_input_file(self, path: str) -> pa.NativeFile:
        if path == self.path and not self.done:
            self.done = True
            if self.replace is None:
                self.local.delete_file(path)
            else:
                pq.write_table(self.replace, path, compression="zstd")
        return self.local.open_input_file(path)


@pytest.mark.parametrize("deleted", [False, True], ids=["replaced", "deleted"])
def test_the_sweep_never_overwrites_a_file_another_writer_changed_after_the_listing(
    tmp_path: Path, deleted: bool
) -> None:
    run(tmp_path, [trip(ANN, 1), trip(BOB, 2)], [trip(ANN, 3), trip(CARL, 4)])
    target = str(tmp_path / "tenant_id=acme/date=2026-01-01/part-archive-0000000000.parquet")
    newer = archive_module._journeys_table([trip(ANN, 1), trip(BOB, 2), trip(BOB, 9)]).drop_columns(["tenant_id"])
    handler = ConcurrentWriter(target, None if deleted else newer)
    forgotten = ForgottenIds(salt_of)
    forgotten.add("acme", ANN)

    report = forget_in_archive(str(tmp_path), forgotten, pa.fs.PyFileSystem(handler))
    other = str(tmp_path / "tenant_id=acme/date=2026-01-01/part-archive-0000000001.parquet")
    assert persons_in(Path(other)) == {CARL}, "the files nobody touched are erased"
    if deleted:
        assert not Path(target).exists(), "a file deleted meanwhile is not brought back"
        assert report == ArchiveForgetReport(files_scanned=1, files_rewritten=1, rows_removed=1)
    else:
        assert pq.read_table(target).equals(newer), "the other writer's file is left for the next sweep"
        assert report.skipped == (target,) and report.files_rewritten == 1
        assert forget_in_archive(str(tmp_path), forgotten).files_rewritten == 1
        assert persons_in(Path(target)) == {BOB}


def test_unreadable_files_are_reported_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run(tmp_path, [trip(ANN, 1), trip(BOB, 2)])
    junk = tmp_path / "tenant_id=acme/date=2026-01-01/part-other-0000000000.parquet"
    junk.write_bytes(b"not parquet")
    forgotten = ForgottenIds(salt_of)
    forgotten.add("acme", ANN)
    with caplog.at_level(logging.WARNING):
        report = forget_in_archive(str(tmp_path), forgotten)
    assert report == ArchiveForgetReport(files_scanned=1, files_rewritten=1, rows_removed=1, skipped=(str(junk),))
    assert "cannot erase persons from" in caplog.text and "run again, or fix" in caplog.text


# --- nothing left anywhere ------------------------------------------------------------


def test_no_file_left_in_the_archive_holds_a_forgotten_person_id(tmp_path: Path) -> None:
    written_archive(tmp_path)
    run(tmp_path, [trip(YURI, 30, tenant="globex"), trip(BOB, 31, tenant="globex")])
    part = build(tmp_path, lineage="store-x", flush_rows=3)
    part.write_batch([trip(ANN, 40), trip(ANN, 41, day=4), trip(BOB, 42), trip(ANN, 43)])  # a flush, one waits
    assert holding(tmp_path, ANN) and holding(tmp_path, YURI), "the raw search finds them before"
    for name in data_files(tmp_path):  # and in every file that holds their rows
        for person in (ANN, YURI):
            if person in persons_in(tmp_path / name):
                assert person.encode() in (tmp_path / name).read_bytes()

    part.write_batch([forget(ANN), forget(ANN, tenant="globex")])
    snap = part.snapshot()
    forgotten = ForgottenIds(salt_of)
    forgotten.add("globex", YURI)  # another process's erasure, found by the sweep
    forget_in_archive(str(tmp_path), forgotten)
    part.close()
    assert holding(tmp_path, ANN) == [] and holding(tmp_path, YURI) == []
    assert ANN.encode() not in pickle.dumps(snap)
    assert holding(tmp_path, BOB), "the search still finds who is left"


# --- in a dataflow, and through crashes ------------------------------------------------


def test_forget_person_items_in_a_dataflow(tmp_path: Path) -> None:
    items: list[object] = [("acme", trip(ANN, n)) for n in range(5)] + [("acme", trip(BOB, n)) for n in range(5, 9)]
    items.insert(6, ("acme", forget(ANN)))
    flow = Dataflow("archive_forget_test")
    op.output(
        "archive",
        op.input("in", flow, TestingSource(items, batch_size=2)),
        ParquetArchiveSink(ArchiveSettings(str(tmp_path), flush_rows=3)),
    )
    run_main(flow)
    assert rows(tmp_path) == expected_rows([trip(BOB, n) for n in range(5, 9)])
    assert holding(tmp_path, ANN) == []


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_forgotten_persons_are_gone_whatever_the_crashes_batches_and_flushes(data: st.DataObject) -> None:
    """Journeys and erasures through crashes and replays (``run_with_crashes``); a person's journeys all
    come before their erasure, as upstream guarantees. The archive ends with every other journey once."""
    people = [("acme", f"u:p{i}x") for i in range(4)] + [("globex", "u:p0x")]
    items: list[Any] = []
    forgotten: set[tuple[str, str]] = set()
    for n in range(data.draw(st.integers(1, 30), label="journeys")):
        alive = [p for p in people if p not in forgotten]
        if not alive:
            break
        tenant, person = data.draw(st.sampled_from(alive), label="person")
        items.append(trip(person, n, tenant=tenant, day=n % 3))
        if data.draw(st.integers(0, 4), label="erase") == 0:
            tenant, person = data.draw(st.sampled_from(alive), label="erased")
            items.append(forget(person, tenant))
            forgotten.add((tenant, person))
    with tempfile.TemporaryDirectory() as root:
        run_with_crashes(data, items, root)
        kept = [j for j in items if isinstance(j, ClosedJourney) and (j.tenant_id, j.person_id) not in forgotten]
        assert rows(Path(root)) == expected_rows(kept)
        for _, person in forgotten:
            if not any(j.person_id == person for j in kept):
                assert holding(Path(root), person) == []
