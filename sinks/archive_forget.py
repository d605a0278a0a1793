"""Erasing forgotten persons from the Parquet archive: the backstop sweep of ``creditflow forget``.

Why a sweep, when the archive sink already erases a person as their
``ForgetPerson`` reaches it (``sinks.parquet_archive``, "Right to be
forgotten")? The sink only rewrites files at the moment of the request. Rows
of a forgotten person can still be in files that moment did not cover:
written by another run (a backfill, a flow started with ``--fresh-state``
over an old archive, a run that was down when the request came), restored
from a backup, or in an archive whose sink never received the request.
:func:`forget_in_archive` checks the whole archive against the durable
suppression list (``ForgottenIds``, loaded from ClickHouse) and removes them.

It uses the sink's own rewrite (``parquet_archive._erase_persons``): per
tenant with forgotten ids, every data file's ``person_id`` column is read and
each distinct id hashed with ``forgotten.hash_of(tenant_id, person_id)``;
files holding a forgotten person are written again without those rows (same
name and schema; a temporary name then a move, or one put on object stores)
or deleted when nothing is left. Tenants without forgotten ids are not read.

Safe while a flow writes the archive: new files are not listed, so not
touched; a listed file is replaced only if it is still the one listed (same
size and modification time), else it is left and reported in ``skipped`` for
the next run. Cost: one listing per tenant, the ``person_id`` column of each
of its files, one keyed BLAKE2b per distinct person per file (~1 µs), and a
full read and write of each matching file.

>>> import tempfile
>>> from creditflow.events import ClosedJourney
>>> from creditflow.forgotten import ForgottenIds
>>> from sinks.parquet_archive import ArchiveSettings, ParquetArchiveSink
>>> root = tempfile.mkdtemp()
>>> part = ParquetArchiveSink(ArchiveSettings(root)).build_part("archive", "archive", None)
>>> part.write_batch([ClosedJourney("acme", person, f"{person}:expired", "expired", 1_767_225_600_000, "", 0.0, (), ())
...                   for person in ("u:ann", "u:bob")])
>>> part.close()
>>> forgotten = ForgottenIds(lambda tenant: b"salt-of-" + tenant.encode())
>>> _ = forgotten.add("acme", "u:ann")
>>> forget_in_archive(root, forgotten)
ArchiveForgetReport(files_scanned=1, files_rewritten=1, files_deleted=0, rows_removed=1, skipped=())
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

import pyarrow.fs as pafs

from creditflow.forgotten import ForgottenIds
from sinks.parquet_archive import (
    SINGLE_PUT_FILESYSTEMS,
    ArchiveForgetReport,
    _erase_persons,
    _tenant_files,
    _with_retries,
    archive_location,
)

__all__ = ["ArchiveForgetReport", "forget_in_archive"]

logger = logging.getLogger("creditflow.sinks.archive_forget")


def forget_in_archive(
    uri: str,
    forgotten: ForgottenIds,
    filesystem: pafs.FileSystem | None = None,
    *,
    retries: int = 3,
    retry_backoff_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ArchiveForgetReport:
    """Remove every person ``forgotten`` lists from the archive at ``uri``; what it did.

    ``uri`` and ``filesystem`` as in ``archive_location``. A failed filesystem call
    (``OSError``) is retried ``retries`` times, waiting ``retry_backoff_s``, doubling,
    then raises ``ArchiveError``; files already rewritten stay so, and running the sweep
    again finishes the rest. Files in ``skipped`` were left as they were (module docstring).
    """
    fs, root = archive_location(uri, filesystem)
    io = partial(
        _with_retries,
        who="The archive forget sweep",
        uri=uri,
        retries=retries,
        backoff_s=retry_backoff_s,
        sleep=sleep,
        fix="Check the filesystem (permissions, credentials) and run the sweep again; it resumes where it stopped",
    )
    single_put = fs.type_name in SINGLE_PUT_FILESYSTEMS
    report = ArchiveForgetReport()
    for tenant in forgotten.tenants():
        hashes = forgotten.tenant_hashes(tenant)

        def doomed_of(person_ids: list[str], tenant: str = tenant, hashes: frozenset[str] = hashes) -> list[str]:
            return [p for p in person_ids if forgotten.hash_of(tenant, p) in hashes]

        files = _tenant_files(fs, root, tenant, io)
        report += _erase_persons(fs, files, doomed_of, io, single_put=single_put)
    log = logger.warning if report.skipped else logger.info
    log(
        "Archive forget sweep over %d tenants: %d rows removed, %d files rewritten, %d deleted, %d scanned, "
        "%d skipped%s",
        len(forgotten.tenants()),
        report.rows_removed,
        report.files_rewritten,
        report.files_deleted,
        report.files_scanned,
        len(report.skipped),
        f" (run again, or fix: {', '.join(report.skipped[:5])})" if report.skipped else "",
    )
    return report
