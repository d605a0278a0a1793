"""Per-tenant retention of the Parquet journey archive: deleting the dates a tenant no longer keeps.

Why: archived journeys name a person (``person_id``) and their touches, so
they may be kept no longer than the tenant's ``retention_days``
(``creditflow.config``; ``inf`` keeps forever). What: :func:`expire_archive`
deletes, for every ``tenant_id=`` directory of the archive (the name decoded
as the sink encodes it), each ``date=YYYY-MM-DD`` directory whose whole UTC
day is before that tenant's cutoff (``RetentionCutoffs.of``): every journey in
it closed before the cutoff (``day start + 1 day <= cutoff``). A day that
straddles the cutoff stays until it is wholly past, so a journey outlives its
retention by less than a day plus the time until the next run. The archive
sink runs the same at a snapshot, at most once per
``ArchiveSettings.retention_interval_s`` (``sinks.parquet_archive``,
"Retention"); this function is for a stopped flow or a one-off.

A date's contents go first (``delete_dir_contents``: data files, and the
temporary ``_...tmp`` files of a crashed run with them), then the directory.
Nothing else is touched: entries of the root other than ``tenant_id=``
directories (``_lineage/``), of a tenant other than ``date=`` directories,
and dates not wholly expired, with their temporary files. Running it again
deletes nothing more; a directory that vanishes meanwhile (another run,
a resumed sink) is not an error. Bound: a report of three counters; the
listing of one tenant's dates at a time. Cost: one listing of the root, one
of each tenant whose cutoff is after the epoch (none when every tenant keeps
forever), and per expired date a listing (to count its files) and two
deletes (batched per 1,000 objects on S3). Readers listing a date while it
is deleted may fail: read dates well within retention.

>>> import tempfile
>>> from pathlib import Path
>>> from creditflow.events import ClosedJourney
>>> from sinks.parquet_archive import ArchiveSettings, ParquetArchiveSink
>>> root, t0, day = tempfile.mkdtemp(), 1_767_225_600_000, 86_400_000  # 2026-01-01
>>> part = ParquetArchiveSink(ArchiveSettings(root)).build_part("archive", "archive", None)
>>> part.write_batch([ClosedJourney("acme", "p", f"j{d}", "expired", t0 + d * day, "", 0.0, (), ()) for d in range(3)])
>>> part.close()
>>> expire_archive(root, RetentionCutoffs(default_ms=t0 + 2 * day + 1))  # 2026-01-03 straddles the cutoff
ArchiveRetentionReport(tenants=1, dates_deleted=2, files_deleted=2)
>>> sorted(p.name for p in Path(root, "tenant_id=acme").iterdir())
['date=2026-01-03']
>>> expire_archive(root, RetentionCutoffs(default_ms=t0 + 2 * day + 1))
ArchiveRetentionReport(tenants=1, dates_deleted=0, files_deleted=0)
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pyarrow.fs as pafs

from creditflow.retention import RetentionCutoffs
from sinks.parquet_archive import _Io, _with_retries, archive_location

__all__ = ["ArchiveRetentionReport", "expire_archive", "expire_dates"]

logger = logging.getLogger("creditflow.sinks.archive_retention")

_DAY_MS = 86_400_000
_EPOCH = dt.date(1970, 1, 1)
_TENANT, _DATE = "tenant_id=", "date="


@dataclass(frozen=True, slots=True)
class ArchiveRetentionReport:
    """What one expiry of the archive did."""

    tenants: int = 0
    """Tenant directories whose dates were listed (those with a cutoff after the epoch)."""
    dates_deleted: int = 0
    """``date=`` directories deleted (not counting those that vanished meanwhile)."""
    files_deleted: int = 0
    """Files in them, data and temporary, as listed just before the delete."""


def _expired(name: str, cutoff_ms: int) -> bool:
    """Whether ``name`` is ``date=YYYY-MM-DD`` of a UTC day that ends at or before ``cutoff_ms``.

    >>> _expired("date=1970-01-01", 86_400_000), _expired("date=1970-01-02", 86_400_000)
    (True, False)
    >>> _expired("date=1970-1-1", 10**15), _expired("_lineage", 10**15), _expired("date=19700101", 10**15)
    (False, False, False)
    """
    text = name[len(_DATE) :]
    if not name.startswith(_DATE) or len(text) != 10:
        return False
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        return False
    return day.isoformat() == text and ((day - _EPOCH).days + 1) * _DAY_MS <= cutoff_ms


def _subdirs(fs: pafs.FileSystem, path: str, io: _Io) -> list[pafs.FileInfo]:
    """The directories directly in ``path`` (none if it is gone), sorted by name."""
    infos = io(lambda: fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)), f"listing {path}")
    return sorted((i for i in infos if i.type == pafs.FileType.Directory), key=lambda i: i.base_name)


def _delete_date(fs: pafs.FileSystem, path: str) -> bool:
    """Delete the directory ``path``, contents first; False if it was already gone."""
    fs.delete_dir_contents(path, missing_dir_ok=True)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        return False
    except OSError:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:  # an object store without directory markers
            return False
        raise
    return True


def expire_dates(fs: pafs.FileSystem, root: str, cutoffs: RetentionCutoffs, io: _Io) -> ArchiveRetentionReport:
    """Delete the expired ``date=`` directories of every tenant under ``root`` (module docstring); no log."""
    if cutoffs.expires_nothing():
        return ArchiveRetentionReport()
    tenants = dates = files = 0
    for tenant_dir in _subdirs(fs, root, io):
        name = tenant_dir.base_name
        if not name.startswith(_TENANT):
            continue
        cutoff = cutoffs.of(urllib.parse.unquote(name[len(_TENANT) :]))
        if cutoff < _DAY_MS:  # no whole day ends before it: keeps everything (0: forever)
            continue
        tenants += 1
        for date_dir in _subdirs(fs, tenant_dir.path, io):
            if not _expired(date_dir.base_name, cutoff):
                continue
            path = date_dir.path
            selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
            listed = io(partial(fs.get_file_info, selector), f"listing {path}")
            if io(partial(_delete_date, fs, path), f"deleting {path}"):
                dates += 1
                files += sum(1 for i in listed if i.type == pafs.FileType.File)
    return ArchiveRetentionReport(tenants, dates, files)


def expire_archive(
    uri: str,
    cutoffs: RetentionCutoffs,
    *,
    filesystem: pafs.FileSystem | None = None,
    retries: int = 3,
    retry_backoff_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ArchiveRetentionReport:
    """Delete the dates of the archive at ``uri`` that are wholly before their tenant's cutoff; what it did.

    ``uri`` and ``filesystem`` as in ``archive_location``; ``cutoffs`` from
    ``creditflow.retention.retention_cutoffs(configs, now_ms, "person")``. A
    failed filesystem call (``OSError``) is retried ``retries`` times, waiting
    ``retry_backoff_s``, doubling, then raises ``ArchiveError``; what was deleted
    stays deleted, and running it again finishes the rest.
    """
    started = time.perf_counter()
    fs, root = archive_location(uri, filesystem)
    io = partial(
        _with_retries,
        who="The archive retention sweep",
        uri=uri,
        retries=retries,
        backoff_s=retry_backoff_s,
        sleep=sleep,
        fix="Check the filesystem (permissions, credentials) and run it again; it resumes where it stopped",
    )
    report = expire_dates(fs, root, cutoffs, io)
    logger.info(
        "Archive retention: %d dates with %d files deleted over %d tenants listed (%.1f s)",
        report.dates_deleted,
        report.files_deleted,
        report.tenants,
        time.perf_counter() - started,
    )
    return report
