"""Per-tenant retention of the Parquet archive: ``expire_archive`` and the sink's expiry at snapshots.

Archives are real files under ``tmp_path`` written by the real sink, read back
with ``read_archive``. Wall time is a fake clock; filesystem faults and a
concurrent deleter are pyarrow ``PyFileSystem`` handlers over the local disk.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pyarrow.fs as pafs
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from creditflow.config import TenantConfig, TenantConfigs
from creditflow.events import ClosedJourney
from creditflow.retention import RetentionCutoffs, retention_cutoffs
from sinks.archive_reader import read_archive
from sinks.archive_retention import ArchiveRetentionReport, expire_archive
from sinks.parquet_archive import SINK_PARTITION, ArchiveError, ArchiveSettings, ParquetArchiveSink, _tenant_dir
from tests.sinks.archive_faults import FaultyFileSystem

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
NOW_MS = T0 + 150 * DAY  # acme (100 days) keeps from T0 + 50 days, the default (200 days) from T0 - 50 days
ODD = "o'brien/x=y ü %"  # percent-encoded in its directory name
CONFIGS = TenantConfigs(
    TenantConfig(retention_days=200),
    {
        "acme": TenantConfig(retention_days=100),
        ODD: TenantConfig(retention_days=100),
        "forever": TenantConfig(retention_days=math.inf),
    },
)
KEEP_ALL = TenantConfigs(TenantConfig(retention_days=math.inf), {"acme": TenantConfig(retention_days=math.inf)})


class WallClock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now = now_ms / 1000

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def trip(n: int, tenant: str, day: int, ms: int = 0) -> ClosedJourney:
    """Journey ``n`` of ``tenant`` closed ``ms`` into ``day`` (days after 2026-01-01)."""
    closed = T0 + day * DAY + ms
    return ClosedJourney(tenant, f"p{n}", f"j{n}", "expired", closed, "", 0.0, ("email",), (closed - 60_000,))


ARCHIVED = [
    trip(1, "acme", 0),
    trip(2, "acme", 10),
    trip(3, "acme", 49, DAY - 1),  # the last ms of the last expired day (it ends at the cutoff)
    trip(4, "acme", 50),  # the first ms of the cutoff's day: kept
    trip(5, "acme", 60),
    trip(6, "forever", 0),
    trip(7, "forever", -400),
    trip(8, "other", -60),  # not configured: the default, 200 days, expires it
    trip(9, "other", -40),
    trip(10, ODD, 0),
    trip(11, ODD, 70),
]
EXPIRED = {"j1", "j2", "j3", "j8", "j10"}
EXPIRED_PATHS = (
    "tenant_id=acme/date=2026-01-01/",
    "tenant_id=acme/date=2026-01-11/",
    "tenant_id=acme/date=2026-02-19/",
    "tenant_id=other/date=2025-11-02/",
    f"{_tenant_dir(ODD)}/date=2026-01-01/",
)


def build(root: Path, wall: WallClock | None = None, fs: Any = None, **settings: Any) -> Any:
    sink = ParquetArchiveSink(
        ArchiveSettings(str(root), **settings), filesystem=fs, wall_clock=wall or WallClock(), sleep=lambda s: None
    )
    return sink.build_part("archive", SINK_PARTITION, None)


def archive(root: Path, rows: list[ClosedJourney]) -> None:
    part = build(root)  # no retention
    part.write_batch(rows)
    part.close()


def dates(root: Path) -> dict[str, list[str]]:
    """``{tenant directory: [date directories]}``."""
    return {
        t.name: sorted(d.name for d in t.iterdir() if d.is_dir())
        for t in sorted(root.iterdir())
        if t.name.startswith("tenant_id=")
    }


def ids(root: Path) -> set[str]:
    return set(read_archive(str(root), latest=False)["journey_id"].to_pylist())


def every_file(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_expired_dates_go_per_tenant_and_the_rest_stays_byte_for_byte(tmp_path: Path) -> None:
    archive(tmp_path, ARCHIVED)
    acme = tmp_path / "tenant_id=acme"
    (acme / "date=2026-01-01" / "_part-archive-0000000009.parquet.tmp").write_bytes(b"crashed")  # goes with it
    (acme / "date=2026-03-02" / "_part-archive-0000000009.parquet.tmp").write_bytes(b"crashed")  # kept date
    (acme / "notes").mkdir()  # not a date directory
    (acme / "date=someday").mkdir()
    (acme / "date=2026-1-1").mkdir()
    (tmp_path / "README").write_text("not the archive's")
    kept = {k: v for k, v in every_file(tmp_path).items() if not any(p in k for p in EXPIRED_PATHS)}

    report = expire_archive(str(tmp_path), retention_cutoffs(CONFIGS, NOW_MS, "person"))

    assert report == ArchiveRetentionReport(tenants=3, dates_deleted=5, files_deleted=6)  # 'forever' is not listed
    assert every_file(tmp_path) == kept
    assert dates(tmp_path) == {
        "tenant_id=acme": ["date=2026-02-20", "date=2026-03-02", "date=2026-1-1", "date=someday", "notes"],
        "tenant_id=forever": ["date=2024-11-27", "date=2026-01-01"],
        _tenant_dir(ODD): ["date=2026-03-12"],
        "tenant_id=other": ["date=2025-11-22"],
    }
    assert ids(tmp_path) == {j.journey_id for j in ARCHIVED} - EXPIRED


def test_a_second_run_deletes_nothing(tmp_path: Path) -> None:
    archive(tmp_path, ARCHIVED)
    cutoffs = retention_cutoffs(CONFIGS, NOW_MS, "person")
    assert expire_archive(str(tmp_path), cutoffs).dates_deleted == 5
    before = every_file(tmp_path)
    assert expire_archive(str(tmp_path), cutoffs) == ArchiveRetentionReport(tenants=3)
    assert every_file(tmp_path) == before


def test_the_default_applies_to_tenants_the_config_does_not_name(tmp_path: Path) -> None:
    archive(tmp_path, [trip(1, "acme", -45), trip(2, "stranger", -60), trip(3, "stranger", -45)])
    report = expire_archive(str(tmp_path), retention_cutoffs(CONFIGS, NOW_MS, "person"))
    assert report.dates_deleted == 2
    assert ids(tmp_path) == {"j3"}  # day -45: past acme's 100 days, within the default's 200


def test_keeping_forever_deletes_nothing_and_lists_nothing(tmp_path: Path) -> None:
    archive(tmp_path, ARCHIVED)
    before = every_file(tmp_path)
    cutoffs = retention_cutoffs(KEEP_ALL, NOW_MS, "person")
    assert expire_archive(str(tmp_path), cutoffs) == ArchiveRetentionReport()
    assert every_file(tmp_path) == before

    class Unlistable(FaultyFileSystem):
        def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
            raise AssertionError("listed")

    assert expire_archive(str(tmp_path), cutoffs, filesystem=pafs.PyFileSystem(Unlistable())).tenants == 0


def test_a_date_deleted_meanwhile_is_not_an_error(tmp_path: Path) -> None:
    archive(tmp_path, ARCHIVED)
    victim = tmp_path / "tenant_id=acme" / "date=2026-01-11"

    class Racing(FaultyFileSystem):
        def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
            infos = self.local.get_file_info(selector)
            if selector.base_dir.endswith("tenant_id=acme") and victim.exists():
                shutil.rmtree(victim)  # another run got there first, after this one listed it
            return infos

    cutoffs = retention_cutoffs(CONFIGS, NOW_MS, "person")
    report = expire_archive(str(tmp_path), cutoffs, filesystem=_fs(Racing()), sleep=no_wait)  # no retry either
    assert report.dates_deleted == 4
    assert ids(tmp_path) == {j.journey_id for j in ARCHIVED} - EXPIRED


def no_wait(seconds: float) -> None:
    raise AssertionError(f"retried (would wait {seconds} s)")


def _fs(handler: FaultyFileSystem) -> pafs.FileSystem:
    return pafs.PyFileSystem(handler)


class Flaky(FaultyFileSystem):
    """Deleting a directory's contents fails ``failures`` times (a store timing out), then works."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("503 Slow Down (simulated)")
        super().delete_dir_contents(path, missing_dir_ok)


def test_a_store_error_is_retried_then_raised(tmp_path: Path) -> None:
    archive(tmp_path, ARCHIVED)
    cutoffs = retention_cutoffs(CONFIGS, NOW_MS, "person")
    waits: list[float] = []
    with pytest.raises(ArchiveError, match=r"failed deleting .*tenant_id=acme/date=2026-01-01 .* after 1 attempts"):
        expire_archive(str(tmp_path), cutoffs, filesystem=_fs(Flaky(1)), retries=0)
    report = expire_archive(str(tmp_path), cutoffs, filesystem=_fs(Flaky(2)), retry_backoff_s=0.5, sleep=waits.append)
    assert waits == [0.5, 1.0] and report.dates_deleted == 5
    assert ids(tmp_path) == {j.journey_id for j in ARCHIVED} - EXPIRED


def test_the_sink_expires_at_its_first_snapshot_then_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive(tmp_path, ARCHIVED)
    wall = WallClock()
    part = build(tmp_path, wall, flush_rows=1, write_retries=0, retention=CONFIGS, retention_interval_s=3600)
    part.write_batch([trip(20, "acme", 0), trip(21, "acme", 60)])  # written at once (flush_rows=1)
    assert ids(tmp_path) >= {"j20", "j21"}
    with caplog.at_level(logging.INFO, logger="creditflow.sinks.parquet_archive"):
        resume = part.snapshot()
    assert "expired 5 dates with 6 files past retention over 3 tenants" in caplog.text
    assert (part.expired_dates, part.expired_files) == (5, 6)
    assert ids(tmp_path) == {j.journey_id for j in ARCHIVED} - EXPIRED | {"j21"}
    assert resume.next_seq == 2 and resume.pending_rows == 0  # the snapshot itself is unchanged

    part.write_batch([trip(22, "acme", 0)])  # into a date it deleted: the directory is created again
    wall.advance(3599)
    part.snapshot()
    assert "j22" in ids(tmp_path) and part.expired_dates == 5

    wall.advance(1)
    part.snapshot()
    assert "j22" not in ids(tmp_path) and (part.expired_dates, part.expired_files) == (6, 7)
    part.close()


def test_the_sink_without_retention_or_keeping_forever_deletes_nothing(tmp_path: Path) -> None:
    archive(tmp_path, ARCHIVED)
    before = every_file(tmp_path)
    no_retention: dict[str, Any] = {}
    for settings in (no_retention, {"retention": KEEP_ALL}):
        part = build(tmp_path, **settings)
        part.snapshot()
        assert part.expired_dates == 0
    assert every_file(tmp_path) == before


def test_a_transient_store_error_during_expiry_does_not_stop_the_sink(tmp_path: Path) -> None:
    archive(tmp_path, ARCHIVED)
    part = build(tmp_path, fs=_fs(Flaky(2)), write_retries=3, retention=CONFIGS)
    part.snapshot()
    assert part.expired_dates == 5
    archive(tmp_path, [trip(30, "acme", 0)])
    failing = build(tmp_path, fs=_fs(Flaky(5)), write_retries=1, retention=CONFIGS)
    with pytest.raises(ArchiveError, match="after 2 attempts"):
        failing.snapshot()  # a store that stays down stops the flow, like a failed write


def test_the_sink_in_a_dataflow_expires_the_archive(tmp_path: Path) -> None:
    archive(tmp_path, ARCHIVED)
    flow = Dataflow("retention")
    journeys = op.input("in", flow, TestingSource([trip(40, "acme", 0), trip(41, "acme", 70)]))
    sink = ParquetArchiveSink(ArchiveSettings(str(tmp_path), retention=CONFIGS), wall_clock=WallClock())
    op.output("archive", op.key_on("key", journeys, lambda j: j.tenant_id), sink)
    run_main(flow)
    # the snapshot expired what was archived before; close() flushed the flow's own rows and expired again,
    # so a finite run (a backfill) ends with nothing past retention: j40 (acme, day 0) is gone, j41 stays
    assert ids(tmp_path) == {j.journey_id for j in ARCHIVED} - EXPIRED | {"j41"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"retention_interval_s": -1.0}, "retention_interval_s=-1.0 must be a finite number"),
        ({"retention_interval_s": math.nan}, "retention_interval_s=nan must be a finite number"),
        ({"retention": {"acme": 30}}, "retention must be TenantConfigs or None"),
    ],
)
def test_bad_retention_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        ArchiveSettings("/tmp/archive", **settings)


def test_a_day_expires_only_once_it_ended_before_the_cutoff(tmp_path: Path) -> None:
    archive(tmp_path, [trip(1, "acme", 0), trip(2, "acme", 1)])
    assert expire_archive(str(tmp_path), RetentionCutoffs(default_ms=T0 + DAY - 1)).dates_deleted == 0
    assert expire_archive(str(tmp_path), RetentionCutoffs(default_ms=T0 + DAY)).dates_deleted == 1
    assert ids(tmp_path) == {"j2"}
