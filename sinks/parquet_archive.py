"""The Bytewax sink that archives closed journeys as Parquet files, for the Ray retrain jobs.

``ParquetArchiveSink(ArchiveSettings(uri))`` takes ``(key, ClosedJourney)``
items (any key; the flow sends ``(tenant_id, journey)``) and writes them as
zstd-compressed Parquet files under ``uri``: a local directory, or any
pyarrow filesystem URI (``s3://bucket/prefix``, ``gs://bucket/prefix``,
``file:///abs/path``). The retrain jobs read this archive, never the live
ClickHouse::

    archive = ParquetArchiveSink(ArchiveSettings("s3://acme-archive/journeys"))
    flow = build_flow(source, sink, settings, archive=archive)

Layout (Hive partitioning)
    ``<uri>/tenant_id=<tenant>/date=<YYYY-MM-DD>/part-<partition>-<seq:010d>.parquet``

    ``date`` is the UTC date of ``closed_at`` (event time); the tenant is
    percent-encoded (``urllib.parse.quote``; pyarrow and Ray decode it). A
    flush writes one file per (tenant, date) group among the rows it holds,
    all named with the flush's ``seq``; rows in a file are sorted by
    ``closed_at``, ``journey_id``, ``revision``. ``tenant_id`` and ``date`` are partition
    columns only, not stored in the files (:data:`ARCHIVE_SCHEMA`): readers
    get them from the path - :func:`read_archive`, ``pyarrow.dataset`` with
    :func:`archive_partitioning`, Ray's ``Partitioning("hive")``.

    Each file appears whole or not at all. It is encoded in memory first; on
    object stores (S3, GCS, Azure: :data:`SINGLE_PUT_FILESYSTEMS`, where a
    rename is a copy) it is written with one put, which becomes visible only
    once complete; on every other filesystem it is written to
    ``_part-...parquet.tmp`` in the same directory, then renamed (atomic on
    POSIX; no fsync, so a power loss, unlike a killed process, can lose the
    last files). Temporary names start with ``_`` (pyarrow datasets skip
    them) and do not end in ``.parquet`` (Ray skips them).

One writer
    The sink has exactly one partition, ``"archive"``: ``part_fn`` always
    returns 0, so every item goes to the one worker that owns it. Files are
    per flush and per (tenant, date); N partitions would write N times as
    many, smaller files and split the sequence numbers, for no gain: journeys
    close far less often than events arrive, and one writer validates,
    encodes and writes ~250k journeys/s (measured: 1-5 touches, 50k-row
    flushes, 2 shared cores). The partition name is in every file name, so
    partitions could be added later without collisions.

Flushes and snapshots
    Rows are buffered and written when ``settings.flush_rows`` wait (checked
    after each ``write_batch``) or the oldest has waited
    ``settings.flush_age_s`` (checked on each ``write_batch`` and snapshot;
    Bytewax calls both only in epochs in which items reach the sink, so in a
    lull the last rows wait for the next journey or the end of the flow).
    The snapshot (:class:`ArchiveResume`) is the next file sequence number
    plus the rows not flushed yet, as a zstd Arrow IPC stream, so snapshots
    do not cut files small. Bound: after every ``write_batch`` fewer than
    ``flush_rows`` rows wait, so a snapshot holds at most ``flush_rows - 1``
    rows - about 40 B each for three touches, 2 MB and ~80 ms to encode at
    the default 50,000 - and the partition holds at most that plus one batch
    in memory. An unchanged partition returns its previous snapshot.

Revisions
    A converted journey is archived again, under the same ``journey_id``
    and with a higher ``revision``, each time its conversion is restated (a
    touch or conversion of the person arrived late, a device's journey was
    merged at an identity link: ``ClosedJourney.revision``); expired and
    unconverted journeys have revision 0. The newest row of a journey is
    the one with the highest revision: :func:`read_archive` returns only
    those unless ``latest=False``, ``jobs.retrain`` keeps only those. A
    flush writes, of the rows it holds with the same tenant, ``journey_id``
    and ``closed_at``, only the one with the highest revision (counted in
    ``superseded``): a restatement that comes before its older revision was
    written replaces it, so the archive holds the revisions that reached a
    file, not necessarily every one. Files written before revisions existed
    have no ``revision`` column; readers take it as 0
    (:data:`ANY_VERSION_SCHEMA`), and so does a resume from a snapshot of
    that version.

Right to be forgotten
    The sink also takes ``creditflow.forgotten.ForgetPerson`` items, routed
    like journeys. One drops that person's journeys (``person_id ==
    person_key`` in its tenant) from the rows waiting for a flush, and the
    partition ignores the person's journeys that arrive later in the same
    epoch, so the next snapshot holds none of them (segments it changed are
    encoded again). At that snapshot (or ``close()``), for all of the epoch's
    erasures at once, it removes the persons from the files already written:
    it lists every ``.parquet`` file of each such tenant (all dates, any
    writer), reads its ``person_id`` column, and writes each file that holds
    an erased person again without those rows, under the same name and as
    atomically as a flush (a temporary ``_<name>.<token>.tmp``, then a move;
    one put on object stores), or deletes it when no row is left. Other rows,
    their order and the file's schema (``revision``, or its absence in older
    files) stay as they were; names, seqs and the lineage marker too.
    Cost: a snapshot after an erasure lists the tenant's files and reads
    their ``person_id`` column (files are sorted by time, so statistics
    cannot skip any); matching files are read and written whole. A failure
    stops the flow like a failed write; the replay sends the ``ForgetPerson``
    again, and erasing twice changes nothing. Counters: ``erased_pending``
    (journeys dropped before a file) and ``erased_in_files``
    (:class:`ArchiveForgetReport`). ``sinks.archive_forget.forget_in_archive``
    is the same rewrite for a whole suppression list (``creditflow forget``).
    Not erased: leftover temporary files of a crashed run (a resume deletes
    them) and older snapshots still kept by the recovery store.

Retention
    With ``settings.retention`` (the tenant configs; None, the default, never
    deletes) the partition deletes each tenant's ``date=`` directories whose
    whole UTC day ended before ``now - retention_days``, contents first
    (``sinks.archive_retention``, which says what it touches and its cost;
    tenants keeping forever are not even listed). It does so in
    ``snapshot()``, after the flush and erasures: at the partition's first
    snapshot (so after every start and resume) and then at most once per
    ``settings.retention_interval_s`` (default an hour) of wall time
    (``wall_clock``, epoch seconds), and once more in ``close()`` after the
    last flush, so a finite run (a backfill) ends with nothing past
    retention. Rows waiting for a flush are not
    expired; once in a file they go at a later expiry, as do dates a resume
    rewrites from its replay. So archived journeys outlive their retention
    by less than a day plus the interval - longer in a lull, since Bytewax
    snapshots the sink only in epochs in which items reach it
    (``sinks.archive_retention.expire_archive`` serves a stopped flow).
    Failures are retried and then stop the flow like a failed write; the
    resumed partition expires again at its first snapshot. State: the wall
    time of the last expiry, not in the snapshot.

Delivery guarantee: each (journey_id, revision) exactly once
    Bytewax resumes after a crash from the last snapshot and replays every
    item after it, batched differently. Files whose seq is at or above the
    snapshot's ``next_seq`` were written by the crashed run after that
    snapshot, from items the replay sends again or rows the snapshot still
    holds. So building the partition from a resume state deletes this
    partition's files with ``seq >= next_seq`` and its temporary files, and
    restores the snapshot's pending rows; the replay writes the rest again.
    Bytewax writes a sink's items in epoch order and snapshots each epoch
    before writing the next one's, so a snapshot covers exactly the items
    before it: whatever the crash point (inside a flush too) and the
    batching, a journey revision the flow emits once is in the archive at
    most once (once unless a higher revision superseded it in a flush), and
    a journey's highest revision exactly once. Bytewax
    0.21 also calls ``close()`` when it drops the partition after an abort;
    what that flushes is past the snapshot and replaced the same way.
    Upstream emits each (``journey_id``, ``revision``) once per run
    (``ClosedJourney``); a restated conversion is a later row with a higher
    revision. Apart from superseded rows within a flush (Revisions above),
    the sink does not de-duplicate.

    Without a resume state the partition starts after the highest seq of
    its files, and the archive remembers at which seq this ``lineage`` (the
    recovery store) began (``_lineage/<partition>.json``). That start is either
    a new store (first run, ``--fresh-state``): the files before are history
    and stay; or the same store restarting before it ever took a snapshot (a
    crash in the first seconds): Bytewax then replays everything, so the
    files this lineage wrote are deleted first and rewritten by the replay.
    Without a lineage (no recovery) nothing is deleted, and a restart writes
    what it replays again: readers keep one row per ``journey_id``, its
    highest revision (:func:`read_archive` and ``jobs.retrain`` do). Leftover
    temporary files are only logged.

    One sink per archive: two flows writing the same ``uri`` would number
    their files alike and delete each other's on resume. Readers see whole
    files only, but not a consistent cut: a flush is several files, and a
    resume deletes and rewrites the files after the snapshot. Train on dates
    the flow has moved past. Cost: a build lists the whole archive
    recursively once, to find this partition's files.

Errors
    A failed filesystem call (``OSError``) is retried ``settings.write_retries``
    times, waiting ``retry_backoff_s``, doubling; then :class:`ArchiveError`
    names the file and the cause and stops the flow (the resume repairs the
    archive as above). Bad input never stops it: an item that is not a
    ``ClosedJourney``, or one that cannot be written (touch lists of
    different lengths, a wrong type, an unknown outcome, a time outside
    1970-9999, text that is not valid Unicode, a tenant too long for a
    directory name) is not written but logged (the first 20 in full, then
    every 1,000th) and counted in the partition's ``rejected`` and
    ``rejected_by_reason``. The journeys step upstream is ours and builds
    valid journeys, so a rejection is a bug to fix there; a sink has no
    stream to send a dead letter on.

Reading (``sinks.archive_reader``)
    :func:`read_archive` returns a pyarrow table (``tenant_id``, ``date``
    and the file columns) for a tenant and a date range, listing and reading
    only those directories; by default only each journey's highest revision.
    For Ray, :func:`archive_files` gives the filesystem and each tenant's
    files in the range, and :func:`archive_location` the filesystem and root
    path. Read them with :data:`ANY_VERSION_SCHEMA` (older files have no
    ``revision``: null, meaning 0) and keep the highest revision per
    ``journey_id`` yourself (``jobs.retrain.read_journeys`` and
    ``journeys_of`` do)::

        fs, path = archive_location(uri)
        ray.data.read_parquet(path, filesystem=fs, schema=pa.schema([*ANY_VERSION_SCHEMA, *PARTITION_SCHEMA]),
                              partitioning=Partitioning("hive", base_dir=path))

>>> import tempfile
>>> from creditflow.events import ClosedJourney
>>> root = tempfile.mkdtemp()
>>> part = ParquetArchiveSink(ArchiveSettings(root)).build_part("archive", "archive", None)
>>> part.write_batch([
...     ClosedJourney("acme", "p1", "converted:o1", "converted", 1_767_225_600_000, "o1", 25.0,
...                   ("email",), (1_767_225_000_000,)),
...     {"not": "a journey"},
... ])
>>> part.write_batch([  # a touch arrived late: the conversion is restated, revision 1
...     ClosedJourney("acme", "p1", "converted:o1", "converted", 1_767_225_600_000, "o1", 25.0,
...                   ("email", "paid_search"), (1_767_225_000_000, 1_767_225_500_000), revision=1),
... ])
>>> part.snapshot()
ArchiveResume(next_seq=0, pending_rows=2)
>>> part.close()  # flushes what is pending; revision 1 supersedes revision 0, not written yet
>>> part.rows_written, part.superseded, part.files_written, part.rejected
(1, 1, 1, 1)
>>> from sinks.archive_reader import read_archive
>>> table = read_archive(root, tenant_id="acme", start_date="2026-01-01")
>>> table.select(["tenant_id", "date", "journey_id", "value", "revision"]).to_pylist()
[{'tenant_id': 'acme', 'date': datetime.date(2026, 1, 1), 'journey_id': 'converted:o1', 'value': 25.0, 'revision': 1}]
>>> [t["channel"] for t in table["touches"][0].as_py()]
['email', 'paid_search']
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
import urllib.parse
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from creditflow.config import TenantConfigs
from creditflow.errors import CreditflowError
from creditflow.events import JOURNEY_OUTCOMES, ClosedJourney
from creditflow.forgotten import ForgetPerson
from creditflow.retention import RETENTION_INTERVAL_S, ExpirySchedule, retention_cutoffs
from operators.parcels import items_of

__all__ = [
    "ANY_VERSION_SCHEMA",
    "ARCHIVE_SCHEMA",
    "PARTITION_SCHEMA",
    "READ_SCHEMA",
    "SINGLE_PUT_FILESYSTEMS",
    "SINK_PARTITION",
    "TOUCH_TYPE",
    "ArchiveError",
    "ArchiveForgetReport",
    "ArchiveItem",
    "ArchiveLocation",
    "ArchiveResume",
    "ArchiveSettings",
    "ParquetArchivePartition",
    "ParquetArchiveSink",
    "archive_location",
    "archive_partitioning",
    "file_name",
]

logger = logging.getLogger("creditflow.sinks.parquet_archive")

ArchiveItem: TypeAlias = ClosedJourney | ForgetPerson
"""What the sink takes: journeys to archive, and erased persons to remove from it."""

SINK_PARTITION = "archive"
"""The sink's only partition; it is part of every file name."""

_TS = pa.timestamp("ms", tz="UTC")
TOUCH_TYPE = pa.struct([pa.field("channel", pa.string()), pa.field("ts", _TS)])
"""One touch of a journey: its channel and event time."""

ARCHIVE_SCHEMA = pa.schema(
    [
        pa.field("journey_id", pa.string()),
        pa.field("person_id", pa.string()),
        pa.field("outcome", pa.string()),
        pa.field("closed_at", _TS),
        pa.field("conversion_id", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("touches", pa.list_(TOUCH_TYPE)),
        pa.field("revision", pa.int32(), nullable=False),
    ]
)
"""The columns stored in each file (never null; ``conversion_id`` is '' and ``value`` 0.0
unless converted; touches in event-time order; ``revision`` 0 unless a converted journey was
restated). ``tenant_id`` and ``date`` come from the path."""

ANY_VERSION_SCHEMA = ARCHIVE_SCHEMA.set(
    ARCHIVE_SCHEMA.get_field_index("revision"), pa.field("revision", pa.int32(), nullable=True)
)
""":data:`ARCHIVE_SCHEMA` as readers ask for it: files written before revisions existed have no
``revision`` column, and read with this schema give null there, which means 0."""

PARTITION_SCHEMA = pa.schema([pa.field("tenant_id", pa.string()), pa.field("date", pa.date32())])
"""The Hive partition columns, in path order."""

_PENDING_SCHEMA = pa.schema([pa.field("tenant_id", pa.string()), *ARCHIVE_SCHEMA])
"""Rows waiting for a flush (and in snapshots): the file columns plus the tenant."""

READ_SCHEMA = pa.schema([*PARTITION_SCHEMA, *ARCHIVE_SCHEMA])
"""What :func:`read_archive` returns."""

SINGLE_PUT_FILESYSTEMS = frozenset({"s3", "gcs", "abfs"})
"""pyarrow filesystem types (``type_name``) written with one put; elsewhere a temp file is renamed."""

_SCHEMES = frozenset({"file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "mock"})
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_DAY_MS = 86_400_000
_EPOCH = dt.date(1970, 1, 1)
_LOG_FIRST_REJECTIONS = 20
_MAX_DIR_NAME = 255
_MAX_REVISION = 2**31 - 1  # int32


class ArchiveError(CreditflowError):
    """The archive could not be opened, written or read; the message says what to fix."""


def _masked(uri: str) -> str:
    """``uri`` with the password of its user info (if any) replaced by ``***``.

    >>> _masked("s3://KEY:SECRET@bucket/prefix"), _masked("/var/archive")
    ('s3://KEY:***@bucket/prefix', '/var/archive')
    """
    scheme, sep, rest = uri.partition("://")
    userinfo, at, host = rest.partition("@")
    if not sep or not at or "/" in userinfo or ":" not in userinfo:
        return uri
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"


@dataclass(frozen=True)
class ArchiveSettings:
    """Where the archive is and when buffered rows become files.

    >>> ArchiveSettings("/var/lib/creditflow/archive", flush_rows=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sinks.parquet_archive.ArchiveError: ArchiveSettings.flush_rows=0 must be an int >= 1: rows buffered ...
    """

    uri: str = field(repr=False)
    """A directory path (relative paths resolve against the working directory) or a pyarrow
    filesystem URI: ``file:///abs/path``, ``s3://bucket/prefix``, ``gs://bucket/prefix``, ..."""
    flush_rows: int = 50_000
    """Flush once this many rows wait; also the bound of a snapshot (``flush_rows - 1`` rows)."""
    flush_age_s: float = 60.0
    """Flush once the oldest waiting row has waited this long (checked on writes and snapshots)."""
    write_retries: int = 3
    """Retries of a file write that failed with ``OSError`` before :class:`ArchiveError`."""
    retry_backoff_s: float = 1.0
    """Wait before the first retry; doubles after each."""
    lineage: str = ""
    """The identity of the flow's recovery store (``flows.run.store_lineage``); '' without recovery.
    A start without a resume state deletes the files this lineage wrote (see the module docstring)."""
    retention: TenantConfigs | None = None
    """Whose ``retention_days`` the sink enforces on the archive (module docstring, "Retention");
    None: it never deletes a date."""
    retention_interval_s: float = RETENTION_INTERVAL_S
    """Expire at the first snapshot, then at most once per this many seconds of wall time."""

    def __post_init__(self) -> None:
        uri = self.uri
        if not isinstance(uri, str) or not uri.strip():
            raise ArchiveError(
                f"ArchiveSettings.uri={uri!r} is empty: give a directory (/var/lib/creditflow/archive) "
                "or a filesystem URI (s3://bucket/prefix, file:///abs/path)"
            )
        if "://" in uri:
            scheme = uri.partition("://")[0].lower()
            if scheme not in _SCHEMES:
                raise ArchiveError(
                    f"ArchiveSettings.uri {_masked(uri)!r} has the unsupported scheme {scheme!r}: use a "
                    f"directory path or one of {', '.join(s + '://' for s in sorted(_SCHEMES))}"
                )
        if type(self.flush_rows) is not int or self.flush_rows < 1:
            raise ArchiveError(
                f"ArchiveSettings.flush_rows={self.flush_rows!r} must be an int >= 1: rows buffered "
                "before a flush (default 50000)"
            )
        age, backoff = self.flush_age_s, self.retry_backoff_s
        if not (_is_number(age) and math.isfinite(age) and age > 0):
            raise ArchiveError(
                f"ArchiveSettings.flush_age_s={age!r} must be a finite number of seconds > 0: how long the "
                "oldest buffered row may wait before a flush (default 60.0)"
            )
        if not (_is_number(backoff) and math.isfinite(backoff) and backoff >= 0):
            raise ArchiveError(f"ArchiveSettings.retry_backoff_s={backoff!r} must be a finite number of seconds >= 0")
        if type(self.write_retries) is not int or self.write_retries < 0:
            raise ArchiveError(
                f"ArchiveSettings.write_retries={self.write_retries!r} must be an int >= 0 (0: fail at once)"
            )
        if self.retention is not None and not isinstance(self.retention, TenantConfigs):
            raise ArchiveError(
                f"ArchiveSettings.retention must be TenantConfigs or None (never expire), "
                f"not {type(self.retention).__name__}"
            )
        interval = self.retention_interval_s
        if not (_is_number(interval) and math.isfinite(interval) and interval >= 0):
            raise ArchiveError(
                f"ArchiveSettings.retention_interval_s={interval!r} must be a finite number of seconds >= 0: "
                f"how often a snapshot expires the archive (default {RETENTION_INTERVAL_S})"
            )

    def __repr__(self) -> str:
        return (
            f"ArchiveSettings(uri={_masked(self.uri)!r}, flush_rows={self.flush_rows}, "
            f"flush_age_s={self.flush_age_s}, write_retries={self.write_retries}, "
            f"retry_backoff_s={self.retry_backoff_s}, retention={'off' if self.retention is None else 'on'}, "
            f"retention_interval_s={self.retention_interval_s})"
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class ArchiveResume:
    """The partition's snapshot: the next file sequence number and the rows not in a file yet.

    Bytewax pickles it into the recovery store: keep this class at this import path.
    """

    next_seq: int
    pending: bytes | tuple[bytes, ...] = field(default=b"", repr=False)
    """The waiting rows as zstd Arrow IPC streams of the pending schema, one per batch of rows
    encoded at a snapshot (each is encoded once: a snapshot costs the rows new since the last);
    b'' or () when none."""
    pending_rows: int = 0


class ArchiveLocation(NamedTuple):
    """A pyarrow filesystem and the archive's root path in it."""

    filesystem: pafs.FileSystem
    path: str


def archive_location(uri: str, filesystem: pafs.FileSystem | None = None) -> ArchiveLocation:
    """The filesystem and root path of the archive at ``uri``.

    A plain path is a local directory; anything with ``://`` goes through
    ``pyarrow.fs.FileSystem.from_uri`` (which may contact the store, e.g. to
    find an S3 bucket's region). With ``filesystem``, ``uri`` is a path in
    it. Ray reads the same layout with ``ray.data.read_parquet(path,
    filesystem=fs, partitioning=Partitioning("hive", base_dir=path))``.

    >>> fs, path = archive_location("/tmp/archive/")
    >>> fs.type_name, path
    ('local', '/tmp/archive')
    """
    if filesystem is not None:
        return ArchiveLocation(filesystem, _strip(uri))
    if "://" not in uri:
        return ArchiveLocation(pafs.LocalFileSystem(), _strip(str(Path(uri).expanduser().absolute())))
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ArchiveError(
            f"cannot open the archive at {_masked(uri)!r}: {exc}. Use a directory path, file:///abs/path "
            "or s3://bucket/prefix (pyarrow.fs.FileSystem.from_uri), with credentials in the environment"
        ) from exc
    return ArchiveLocation(fs, _strip(path))


def _strip(path: str) -> str:
    return path.rstrip("/") or "/"


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def archive_partitioning() -> ds.Partitioning:
    """The archive's ``pyarrow.dataset`` partitioning: Hive, ``tenant_id`` string, ``date`` date32."""
    return ds.partitioning(PARTITION_SCHEMA, flavor="hive")


def file_name(partition: str, seq: int) -> str:
    """The name of a partition's file of flush ``seq``.

    >>> file_name("archive", 7)
    'part-archive-0000000007.parquet'
    """
    return f"part-{partition}-{seq:010d}.parquet"


@lru_cache(maxsize=4096)
def _tenant_dir(tenant_id: str) -> str:
    return "tenant_id=" + urllib.parse.quote(tenant_id, safe="")


def _date_of_day(day: int) -> str:
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


# --- validation of items -------------------------------------------------------


def _text_ok(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _time_ok(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_MS


def _problem(item: object) -> tuple[str, str] | None:
    """``(reason, detail)`` when ``item`` cannot be archived, else None."""
    if not isinstance(item, ClosedJourney):
        return "not_a_closed_journey", f"got a {type(item).__name__}, not a ClosedJourney"
    for name in ("tenant_id", "person_id", "journey_id", "outcome", "conversion_id"):
        if not _text_ok(getattr(item, name)):
            return "bad_field", f"{name}={getattr(item, name)!r} is not valid Unicode text"
    if item.outcome not in JOURNEY_OUTCOMES:
        return "bad_field", f"outcome={item.outcome!r} is not one of {JOURNEY_OUTCOMES}"
    if len(_tenant_dir(item.tenant_id)) > _MAX_DIR_NAME:
        return "bad_field", f"tenant_id is too long for a directory name ({len(item.tenant_id)} characters)"
    if not _time_ok(item.closed_at_ms):
        return "bad_field", f"closed_at_ms={item.closed_at_ms!r} is not epoch ms between 1970 and 9999"
    if not _is_number(item.value) or not math.isfinite(item.value):
        return "bad_field", f"value={item.value!r} is not a finite number"
    if type(item.revision) is not int or not 0 <= item.revision <= _MAX_REVISION:
        return "bad_field", f"revision={item.revision!r} is not an int between 0 and {_MAX_REVISION}"
    channels, times = item.touch_channels, item.touch_ts_ms
    if not isinstance(channels, tuple | list) or not isinstance(times, tuple | list):
        return "bad_touches", "touch_channels and touch_ts_ms must be tuples"
    if len(channels) != len(times):
        return "bad_touches", f"{len(channels)} touch channels but {len(times)} touch times"
    if not all(map(_text_ok, channels)):
        return "bad_touches", "a touch channel is not valid Unicode text"
    if not all(map(_time_ok, times)):
        return "bad_touches", "a touch time is not epoch ms between 1970 and 9999"
    return None


def _journeys_table(rows: Sequence[ClosedJourney]) -> pa.Table:
    """``rows`` (valid) as a table of the pending schema."""
    offsets = [0]
    channels: list[str] = []
    times: list[int] = []
    for row in rows:
        channels.extend(row.touch_channels)
        times.extend(row.touch_ts_ms)
        offsets.append(len(channels))
    touches = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays([pa.array(channels, pa.string()), pa.array(times, _TS)], fields=list(TOUCH_TYPE)),
    )
    return pa.Table.from_arrays(
        [
            pa.array([r.tenant_id for r in rows], pa.string()),
            pa.array([r.journey_id for r in rows], pa.string()),
            pa.array([r.person_id for r in rows], pa.string()),
            pa.array([r.outcome for r in rows], pa.string()),
            pa.array([r.closed_at_ms for r in rows], _TS),
            pa.array([r.conversion_id for r in rows], pa.string()),
            pa.array([float(r.value) for r in rows], pa.float64()),
            touches,
            pa.array([r.revision for r in rows], pa.int32()),
        ],
        schema=_PENDING_SCHEMA,
    )


def _groups(table: pa.Table) -> Iterator[tuple[str, str, pa.Table]]:
    """``(tenant_id, date, rows)`` per (tenant, UTC date of closed_at), rows sorted, file columns only.

    Of rows with the same tenant, ``closed_at`` and ``journey_id`` (adjacent once sorted), only
    the one with the highest revision is kept: the others are superseded restatements.
    """
    day = pc.divide(table["closed_at"].cast(pa.int64()), _DAY_MS)
    table = table.append_column("_day", day).sort_by(
        [
            ("tenant_id", "ascending"),
            ("_day", "ascending"),
            ("closed_at", "ascending"),
            ("journey_id", "ascending"),
            ("revision", "ascending"),
        ]
    )
    if table.num_rows > 1:
        keys = table.select(["tenant_id", "closed_at", "journey_id"]).combine_chunks()
        head, tail = keys.slice(0, table.num_rows - 1), keys.slice(1)
        same = pc.and_(
            pc.and_(pc.equal(head["tenant_id"], tail["tenant_id"]), pc.equal(head["closed_at"], tail["closed_at"])),
            pc.equal(head["journey_id"], tail["journey_id"]),
        )
        if pc.any(same).as_py():  # a row followed by a higher (or equal) revision of its journey is dropped
            table = table.filter(pa.concat_arrays([pc.invert(same.combine_chunks()), pa.array([True])]))
    tenants = table["tenant_id"].to_pylist()
    days = table["_day"].to_pylist()
    files = table.select(ARCHIVE_SCHEMA.names)
    start = 0
    for end in range(1, len(tenants) + 1):
        if end == len(tenants) or tenants[end] != tenants[start] or days[end] != days[start]:
            yield tenants[start], _date_of_day(days[start]), files.slice(start, end - start)
            start = end


def _rows_of(table: pa.Table, persons: dict[str, set[str]]) -> pa.ChunkedArray:
    """A mask of ``table``'s rows (pending schema) whose (tenant_id, person_id) is in ``persons``."""
    mask: Any = None
    for tenant, keys in persons.items():
        match = pc.and_(
            pc.equal(table["tenant_id"], tenant),
            pc.is_in(table["person_id"], value_set=pa.array(sorted(keys), pa.string())),
        )
        mask = match if mask is None else pc.or_(mask, match)
    return mask


def _encode_pending(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, _PENDING_SCHEMA, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _decode_pending(data: bytes, step_id: str) -> pa.Table:
    """A snapshot segment as a table of the pending schema; rows of a version before revisions get 0."""
    try:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        if "revision" not in table.column_names and table.column_names == _PENDING_SCHEMA.names[:-1]:
            table = table.append_column("revision", pa.repeat(pa.scalar(0, pa.int32()), table.num_rows))
        return table.cast(_PENDING_SCHEMA)
    except (pa.ArrowException, ValueError) as exc:
        raise ArchiveError(
            f"the Parquet archive sink {step_id!r} cannot read the pending rows of its resume state ({exc}): "
            "the snapshot comes from an incompatible version. Resume with the version that wrote it until a "
            "snapshot has no pending rows, or start without recovery state (the pending rows are then lost)"
        ) from exc


# --- file I/O shared with sinks.archive_forget -----------------------------------

_Io: TypeAlias = Callable[[Callable[[], Any], str], Any]
"""``io(call, what)``: ``call()`` with retries on OSError; ``what`` names the operation in errors."""


def _with_retries(
    call: Callable[[], Any],
    what: str,
    *,
    who: str,
    uri: str,
    retries: int,
    backoff_s: float,
    sleep: Callable[[float], None],
    fix: str,
) -> Any:
    """``call()``, retried on OSError ``retries`` times with doubling waits, then ArchiveError ending in ``fix``."""
    for attempt in range(retries + 1):
        try:
            return call()
        except OSError as exc:
            if attempt == retries:
                raise ArchiveError(
                    f"{who} failed {what} in {_masked(uri)!r} after {attempt + 1} attempts: {exc}. {fix}"
                ) from exc
            delay = backoff_s * 2**attempt
            logger.warning(
                "%s failed %s (attempt %d of %d, retrying in %.1f s): %s",
                who,
                what,
                attempt + 1,
                retries + 1,
                delay,
                exc,
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _put_file(
    fs: pafs.FileSystem, path: str, data: pa.Buffer, temp: str | None, before: Callable[[], bool] | None = None
) -> bool:
    """Write ``data`` to ``path`` whole or not at all: to ``temp`` then moved over ``path``, or one put if None.

    ``before()``, if given, runs first; when it is false nothing is written (returns False).
    On any failure the temporary (or half-put) file is removed and the error raised.
    """
    if before is not None and not before():
        return False
    target = temp or path
    try:
        with fs.open_output_stream(target, compression=None) as stream:
            stream.write(data)
        if target != path:
            fs.move(target, path)
    except BaseException:
        try:
            fs.delete_file(target)
        except OSError:
            pass  # never written, or already gone: nothing to clean
        raise
    return True


@dataclass(frozen=True)
class ArchiveForgetReport:
    """What removing erased persons' rows from archive files did (summed over files)."""

    files_scanned: int = 0
    """Files whose ``person_id`` column was read."""
    files_rewritten: int = 0
    """Files written again, under the same name, without the erased persons' rows."""
    files_deleted: int = 0
    """Files that held nothing but erased persons' rows: deleted."""
    rows_removed: int = 0
    skipped: tuple[str, ...] = ()
    """Files left as they were though they may hold erased persons: unreadable, without a ``person_id``
    column, or changed by another writer while being read (run the erasure again; fix or remove the others)."""

    def __add__(self, other: ArchiveForgetReport) -> ArchiveForgetReport:
        return ArchiveForgetReport(
            self.files_scanned + other.files_scanned,
            self.files_rewritten + other.files_rewritten,
            self.files_deleted + other.files_deleted,
            self.rows_removed + other.rows_removed,
            self.skipped + other.skipped,
        )


def _tenant_files(fs: pafs.FileSystem, root: str, tenant_id: str, io: _Io) -> list[pafs.FileInfo]:
    """Every data file of ``tenant_id`` (any date, any writer; not temporary files), sorted by path."""
    base = _join(root, _tenant_dir(tenant_id))
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    infos = io(lambda: fs.get_file_info(selector), f"listing {base}")
    files = [info for info in infos if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")]
    return sorted((info for info in files if info.base_name[:1] not in "_."), key=lambda info: info.path)


class _NotAnArchiveFile(ValueError):
    """A ``.parquet`` file in the archive without a ``person_id`` column."""


def _read_file(fs: pafs.FileSystem, path: str, columns: list[str] | None = None) -> pa.Table | None:
    """The file's table (its own schema), or only ``columns``; None if it is gone (another writer deleted it)."""
    try:
        f = fs.open_input_file(path)
    except FileNotFoundError:
        return None
    with f:
        parquet = pq.ParquetFile(f)
        if "person_id" not in parquet.schema_arrow.names:
            raise _NotAnArchiveFile(f"{path} has no person_id column")
        return parquet.read(columns=columns)


def _same_file(fs: pafs.FileSystem, seen: pafs.FileInfo) -> bool:
    """Whether ``seen.path`` is still the file listed as ``seen`` (size, and mtime to the second when known)."""
    now = fs.get_file_info(seen.path)
    if now.type != pafs.FileType.File or now.size != seen.size:
        return False
    if now.mtime is None or seen.mtime is None:
        return True
    return int(now.mtime.timestamp()) == int(seen.mtime.timestamp())


def _erase_persons(
    fs: pafs.FileSystem,
    files: Sequence[pafs.FileInfo],
    doomed_of: Callable[[list[str]], Collection[str]],
    io: _Io,
    *,
    single_put: bool,
) -> ArchiveForgetReport:
    """Remove the rows of erased persons from ``files`` (listed infos): the one rewrite of the archive.

    ``doomed_of(distinct person ids of a file)`` names those to remove. A file is read
    whole only if it holds one; then it is written again without their rows (same name,
    same schema, zstd, atomic as a flush: a temporary name then a move, or one put when
    ``single_put``), or deleted if nothing is left. Just before that, the file must still be
    the one listed (:func:`_same_file`), else it is skipped: a concurrent writer (a resumed
    flow rewriting its files) is never overwritten with an older copy.
    """
    scanned = rewritten = deleted = removed = 0
    skipped: list[str] = []
    for info in files:
        path = info.path
        try:
            ids = io(partial(_read_file, fs, path, ["person_id"]), f"reading {path}")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, _NotAnArchiveFile) as exc:
            logger.error("Parquet archive: cannot erase persons from %s (%s): fix or remove it", path, exc)
            skipped.append(path)
            continue
        if ids is None:
            continue  # deleted since it was listed: nothing left to erase
        scanned += 1
        doomed = doomed_of(pc.unique(ids["person_id"]).drop_null().to_pylist())
        if not doomed:
            continue
        try:
            table = io(partial(_read_file, fs, path), f"reading {path}")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, _NotAnArchiveFile):
            table = None  # replaced since it was listed (it read before): _same_file is false
        if table is None:
            logger.warning("Parquet archive: %s changed while persons were erased from it; left for the next run", path)
            skipped.append(path)
            continue
        kept = table.filter(pc.invert(pc.is_in(table["person_id"], value_set=pa.array(sorted(doomed), pa.string()))))
        check = partial(_same_file, fs, info)
        if kept.num_rows == 0:
            done = io(partial(_delete_if, fs, path, check), f"deleting {path}")
        else:
            out = pa.BufferOutputStream()
            pq.write_table(kept, out, compression="zstd")
            name = path.rsplit("/", 1)[-1]
            temp = None if single_put else _join(path.rsplit("/", 1)[0], f"_{name}.{uuid.uuid4().hex[:12]}.tmp")
            done = io(partial(_put_file, fs, path, out.getvalue(), temp, check), f"rewriting {path}")
        if not done:
            logger.warning("Parquet archive: %s changed while persons were erased from it; left for the next run", path)
            skipped.append(path)
            continue
        removed += table.num_rows - kept.num_rows
        if kept.num_rows:
            rewritten += 1
        else:
            deleted += 1
    return ArchiveForgetReport(scanned, rewritten, deleted, removed, tuple(skipped))


def _delete_if(fs: pafs.FileSystem, path: str, check: Callable[[], bool]) -> bool:
    if not check():
        return False
    fs.delete_file(path)
    return True


# --- the sink -----------------------------------------------------------------


class ParquetArchivePartition(StatefulSinkPartition[ArchiveItem, ArchiveResume]):
    """The one writer of the archive: buffers rows, writes them as files, repairs after a crash.

    Built by :meth:`ParquetArchiveSink.build_part`: from a resume state it
    deletes this partition's files at or after the snapshot's ``next_seq``
    and its temporary files (module docstring). Counters: ``rejected`` and
    ``rejected_by_reason`` (bad items), ``rows_written``, ``superseded``
    (rows a higher revision of the same journey replaced in their flush),
    ``files_written``, ``flushes``, ``deleted_files`` (by the build), ``erased_pending``
    and ``erased_in_files`` (right to be forgotten, module docstring). Rows restored from a
    snapshot count their age from the build. Bound of the erasure state: the person keys
    erased since the last snapshot (one epoch's deletion requests). Retention (module
    docstring): ``expired_dates`` and ``expired_files`` count what it deleted; its state is the
    wall time of the last expiry.
    """

    def __init__(
        self,
        settings: ArchiveSettings,
        step_id: str,
        partition: str,
        resume: ArchiveResume | None,
        *,
        filesystem: pafs.FileSystem | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._step_id = step_id
        self._partition = partition
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._fs, self._root = archive_location(settings.uri, filesystem)
        self._single_put = self._fs.type_name in SINGLE_PUT_FILESYSTEMS
        self._dirs: set[str] = set()
        self.rejected = 0
        self.rejected_by_reason: dict[str, int] = {}
        self.rows_written = 0
        self.superseded = 0
        self.files_written = 0
        self.flushes = 0
        self.deleted_files = 0
        self.erased_pending = 0
        self.erased_in_files = ArchiveForgetReport()
        self.expired_dates = 0
        self.expired_files = 0
        self._expiry = ExpirySchedule(settings.retention_interval_s)
        """When the dates past retention are next deleted (``wall_clock`` seconds)."""
        self._erasures: dict[str, set[str]] = {}
        """Per tenant, the person keys erased since the last snapshot: their files are rewritten at the next one."""
        self._closed = False
        if not self._single_put:
            self._io(lambda: self._fs.create_dir(self._root, recursive=True), f"creating {self._root}")
        finals, temps = self._own_files()
        self._chunks: list[pa.Table] = []
        self._encoded: list[bytes] = []
        """``_chunks[i]`` as a snapshot segment, for the first ``len(_encoded)`` chunks: each chunk is encoded once."""
        if resume is None:
            self.next_seq = max(finals.values(), default=-1) + 1
            began = self._lineage_start()
            if began is not None:  # this store restarts before its first snapshot: the replay rewrites these
                doomed = sorted(path for path, seq in finals.items() if seq >= began)
                for path in doomed:
                    self._io(partial(self._fs.delete_file, path), f"deleting {path}")
                self.deleted_files = len(doomed)
                self.next_seq = began
            elif settings.lineage:
                self._mark_lineage_start()
            if temps:
                logger.warning(
                    "Parquet archive sink %s starts without a resume state and keeps %d temporary files of an "
                    "earlier run (readers ignore them), e.g. %s",
                    step_id,
                    len(temps),
                    temps[0],
                )
        else:
            self.next_seq = resume.next_seq
            doomed = sorted(temps + [path for path, seq in finals.items() if seq >= resume.next_seq])
            for path in doomed:
                self._io(partial(self._fs.delete_file, path), f"deleting {path}")
            self.deleted_files = len(doomed)
            segments = (resume.pending,) if isinstance(resume.pending, bytes) else tuple(resume.pending)
            for segment in segments:
                if segment:
                    self._chunks.append(_decode_pending(segment, step_id))
                    self._encoded.append(segment)
        self._rows: list[ClosedJourney] = []
        self._pending = sum(len(c) for c in self._chunks)
        self._oldest_at: float | None = clock() if self._pending else None
        self._last_snapshot: ArchiveResume | None = None
        logger.info(
            "Parquet archive sink %s writes to %s from seq %d (%s; %d files removed, %d rows pending)",
            step_id,
            _masked(settings.uri),
            self.next_seq,
            "fresh start" if resume is None else "resumed",
            self.deleted_files,
            self._pending,
        )

    @property
    def pending_rows(self) -> int:
        """Rows waiting for the next flush."""
        return self._pending

    def _lineage_path(self) -> str:
        return _join(self._root, "_lineage", f"{self._partition}.json")

    def _lineage_start(self) -> int | None:
        """The seq this lineage began at, if the archive's marker names this lineage."""
        if not self._settings.lineage:
            return None
        path = self._lineage_path()
        info = self._io(lambda: self._fs.get_file_info(path), f"reading {path}")
        if info.type != pafs.FileType.File:
            return None

        def read() -> bytes:
            with self._fs.open_input_stream(path) as f:
                return bytes(f.read())

        try:
            marker = json.loads(self._io(read, f"reading {path}"))
        except ValueError:
            return None
        if marker.get("lineage") == self._settings.lineage and isinstance(marker.get("first_seq"), int):
            return int(marker["first_seq"])
        return None

    def _mark_lineage_start(self) -> None:
        data = json.dumps({"lineage": self._settings.lineage, "first_seq": self.next_seq}).encode()
        directory = _join(self._root, "_lineage")
        if not self._single_put:
            self._io(lambda: self._fs.create_dir(directory, recursive=True), f"creating {directory}")

        def write() -> None:
            with self._fs.open_output_stream(self._lineage_path()) as f:
                f.write(data)

        self._io(write, f"writing {self._lineage_path()}")

    def _own_files(self) -> tuple[dict[str, int], list[str]]:
        """This partition's files under the root: ``{path: seq}`` and the temporary files' paths."""
        selector = pafs.FileSelector(self._root, recursive=True, allow_not_found=True)
        infos = self._io(lambda: self._fs.get_file_info(selector), f"listing {self._root}")
        prefix = f"part-{self._partition}-"
        finals: dict[str, int] = {}
        temps: list[str] = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            name = info.base_name
            if name.startswith("_" + prefix) and name.endswith(".tmp"):
                temps.append(info.path)
            elif name.startswith(prefix) and name.endswith(".parquet"):
                digits = name[len(prefix) : -len(".parquet")]
                if len(digits) == 10 and digits.isdigit():
                    finals[info.path] = int(digits)
        return finals, temps

    def write_batch(self, values: Sequence[ArchiveItem | list[ArchiveItem]]) -> None:  # type: ignore[override]
        """Buffer the valid journeys of ``values``; flush when ``flush_rows`` wait or the oldest is too old.

        ``values`` are journeys and erasures, or parcels of them (lists, ``operators.parcels``).

        A ``ForgetPerson`` drops the person's waiting journeys and those of this epoch, wherever
        they are in the batch; the person's files are rewritten at the next snapshot.
        """
        good: list[ClosedJourney] = []
        erased: dict[str, set[str]] = {}
        items: list[ArchiveItem] = items_of(values)
        for item in items:
            if isinstance(item, ForgetPerson):
                if _text_ok(item.tenant_id) and _text_ok(item.person_key):
                    erased.setdefault(item.tenant_id, set()).add(item.person_key)
                else:
                    self._reject(item, "bad_forget", "tenant_id and person_key must be valid Unicode text")
                continue
            problem = _problem(item)
            if problem is None:
                good.append(item)
            else:
                self._reject(item, *problem)
        if erased:
            self._forget_pending(erased)
        if self._erasures and good:
            kept = [j for j in good if j.person_id not in self._erasures.get(j.tenant_id, ())]
            self.erased_pending += len(good) - len(kept)
            good = kept
        if good:
            self._rows.extend(good)
            self._pending += len(good)
            self._last_snapshot = None
            if self._oldest_at is None:
                self._oldest_at = self._clock()
        if self._pending >= self._settings.flush_rows or self._too_old():
            self._flush()

    def _forget_pending(self, erased: dict[str, set[str]]) -> None:
        """Note ``erased`` (tenant -> person keys) for the next snapshot and drop their waiting rows."""
        for tenant, keys in erased.items():
            self._erasures.setdefault(tenant, set()).update(keys)
        rows = [r for r in self._rows if r.person_id not in erased.get(r.tenant_id, ())]
        dropped = len(self._rows) - len(rows)
        self._rows = rows
        chunks: list[pa.Table] = []
        encoded: list[bytes] = []
        for i, chunk in enumerate(self._chunks):
            doomed = _rows_of(chunk, erased)
            count = pc.sum(doomed).as_py() or 0
            if count:
                chunk = chunk.filter(pc.invert(doomed))
                dropped += count
            if not chunk.num_rows:
                continue
            chunks.append(chunk)
            if i < len(self._encoded):  # keep encoded segments a prefix: a changed one is encoded again
                encoded.append(self._encoded[i] if not count else _encode_pending(chunk))
        self._chunks, self._encoded = chunks, encoded
        if dropped:
            self._pending -= dropped
            self.erased_pending += dropped
            self._last_snapshot = None
            if not self._pending:
                self._oldest_at = None

    def _forget_in_files(self) -> None:
        """Rewrite the files of each tenant with erasures since the last snapshot without the erased persons."""
        report = ArchiveForgetReport()
        for tenant in sorted(self._erasures):
            keys = self._erasures[tenant]
            files = _tenant_files(self._fs, self._root, tenant, self._io)
            report += _erase_persons(self._fs, files, keys.intersection, self._io, single_put=self._single_put)
        persons = sum(map(len, self._erasures.values()))
        self._erasures = {}
        self.erased_in_files += report
        log = logger.warning if report.skipped else logger.info
        log(
            "Parquet archive sink %s erased %d persons: %d rows removed from %d files (%d rewritten, %d deleted, "
            "%d scanned, %d skipped); %d waiting journeys dropped so far",
            self._step_id,
            persons,
            report.rows_removed,
            report.files_rewritten + report.files_deleted,
            report.files_rewritten,
            report.files_deleted,
            report.files_scanned,
            len(report.skipped),
            self.erased_pending,
        )

    def _reject(self, item: object, reason: str, detail: str) -> None:
        self.rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1
        if self.rejected <= _LOG_FIRST_REJECTIONS or self.rejected % 1000 == 0:
            journey = getattr(item, "journey_id", None)
            logger.warning(
                "Parquet archive sink %s did not write an item (%s: %s; journey_id=%r); %d rejected so far. "
                "The upstream journeys step must only emit valid ClosedJourney rows: fix it there",
                self._step_id,
                reason,
                detail,
                journey,
                self.rejected,
            )

    def _too_old(self) -> bool:
        return self._oldest_at is not None and self._clock() - self._oldest_at >= self._settings.flush_age_s

    def _pending_table(self) -> pa.Table:
        """Every waiting row as one table; the Python rows are converted once and kept as a chunk."""
        if self._rows:
            self._chunks.append(_journeys_table(self._rows))
            self._rows = []
        if not self._chunks:
            return _PENDING_SCHEMA.empty_table()
        return pa.concat_tables(self._chunks).combine_chunks() if len(self._chunks) > 1 else self._chunks[0]

    def _flush(self) -> None:
        """Write every waiting row: one file per (tenant, date), all named with ``next_seq``."""
        table = self._pending_table()
        if table.num_rows:
            seq = self.next_seq
            name = file_name(self._partition, seq)
            files = written = 0
            for tenant, date, rows in _groups(table):
                self._write_file(_join(self._root, _tenant_dir(tenant), f"date={date}"), name, rows)
                files += 1
                written += rows.num_rows
            self.next_seq = seq + 1
            self.rows_written += written
            self.superseded += table.num_rows - written
            self.files_written += files
            self.flushes += 1
            logger.debug(
                "Parquet archive sink %s wrote %d rows in %d files (seq %d; %d superseded revisions left out)",
                self._step_id,
                written,
                files,
                seq,
                table.num_rows - written,
            )
        self._chunks = []
        self._encoded = []
        self._rows = []
        self._pending = 0
        self._oldest_at = None
        self._last_snapshot = None

    def _write_file(self, directory: str, name: str, rows: pa.Table) -> None:
        """Write ``rows`` to ``directory/name`` whole or not at all (module docstring), retrying OSError."""
        out = pa.BufferOutputStream()
        pq.write_table(rows, out, compression="zstd")
        data = out.getvalue()
        path = _join(directory, name)
        temp = None if self._single_put else _join(directory, f"_{name}.tmp")
        if not self._single_put and directory not in self._dirs:
            self._io(lambda: self._fs.create_dir(directory, recursive=True), f"creating {directory}")
            self._dirs.add(directory)
        self._io(partial(_put_file, self._fs, path, data, temp), f"writing {path}")

    def _io(self, call: Callable[[], Any], what: str) -> Any:
        """``call()``, retried on OSError ``write_retries`` times with doubling waits, then ArchiveError."""
        return _with_retries(
            call,
            what,
            who=f"Parquet archive sink {self._step_id!r}",
            uri=self._settings.uri,
            retries=self._settings.write_retries,
            backoff_s=self._settings.retry_backoff_s,
            sleep=self._sleep,
            fix="Check the filesystem (space, permissions, credentials); the flow resumes from its last snapshot "
            "and rewrites what is missing",
        )

    def _expire_if_due(self) -> None:
        """Delete the dates past their tenant's retention, at the first call and then once per interval."""
        configs = self._settings.retention
        if configs is None:
            return
        now = self._wall_clock()
        if not self._expiry.due(now):
            return
        from sinks.archive_retention import expire_dates  # it imports this module

        started = time.perf_counter()
        report = expire_dates(self._fs, self._root, retention_cutoffs(configs, int(now * 1000), "person"), self._io)
        self._expiry.ran(now)
        self._dirs.clear()  # a date deleted (by this or another run) and written again needs its directory again
        self.expired_dates += report.dates_deleted
        self.expired_files += report.files_deleted
        logger.info(
            "Parquet archive sink %s expired %d dates with %d files past retention over %d tenants listed "
            "(%.1f s; next in %g s)",
            self._step_id,
            report.dates_deleted,
            report.files_deleted,
            report.tenants,
            time.perf_counter() - started,
            self._settings.retention_interval_s,
        )

    def snapshot(self) -> ArchiveResume:
        """Flush if the oldest row is too old, erase from files, expire if due, then the next seq and waiting rows."""
        if self._too_old():
            self._flush()
        if self._erasures:
            self._forget_in_files()
        self._expire_if_due()
        if self._last_snapshot is None:
            if self._rows:
                self._chunks.append(_journeys_table(self._rows))
                self._rows = []
            while len(self._encoded) < len(self._chunks):  # only rows new since the last snapshot are encoded
                self._encoded.append(_encode_pending(self._chunks[len(self._encoded)]))
            self._last_snapshot = ArchiveResume(self.next_seq, tuple(self._encoded), self._pending)
        return self._last_snapshot

    def close(self) -> None:
        """Flush what waits and expire (Bytewax calls this at the end of a finite flow)."""
        if self._closed:
            return
        self._flush()
        if self._erasures:
            self._forget_in_files()
        self._expiry.force()  # a finite run (a backfill) ends with nothing past retention
        self._expire_if_due()
        self._closed = True
        logger.info(
            "Parquet archive sink %s closed: %d rows in %d files (%d flushes; %d superseded revisions left out), "
            "%d items rejected %s; erased: %d waiting journeys, %d rows in %d files",
            self._step_id,
            self.rows_written,
            self.files_written,
            self.flushes,
            self.superseded,
            self.rejected,
            self.rejected_by_reason or "",
            self.erased_pending,
            self.erased_in_files.rows_removed,
            self.erased_in_files.files_rewritten + self.erased_in_files.files_deleted,
        )


class ParquetArchiveSink(FixedPartitionedSink[ArchiveItem, ArchiveResume]):
    """Bytewax sink writing ``(key, ClosedJourney)`` items to the Parquet archive through one writer.

    ``(key, ForgetPerson)`` items erase a person from it (module docstring).

    ``filesystem`` replaces the one ``settings.uri`` names (``uri`` is then a
    path in it: custom S3 options, tests); ``clock`` (seconds, monotonic)
    and ``sleep`` drive the flush age and retry waits, ``wall_clock`` (epoch
    seconds) the retention cutoffs and interval. Nothing touches the
    filesystem before ``build_part``.
    """

    def __init__(
        self,
        settings: ArchiveSettings,
        *,
        filesystem: pafs.FileSystem | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.filesystem = filesystem
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock

    def list_parts(self) -> list[str]:
        return [SINK_PARTITION]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: ArchiveResume | None) -> ParquetArchivePartition:
        """Open the archive, repair it after a crash (from ``resume_state``) and return the writer."""
        return ParquetArchivePartition(
            self.settings,
            step_id,
            for_part,
            resume_state,
            filesystem=self.filesystem,
            clock=self.clock,
            sleep=self.sleep,
            wall_clock=self.wall_clock,
        )
