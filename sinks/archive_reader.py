"""Reading the Parquet archive of closed journeys (``sinks.parquet_archive`` writes it).

:func:`read_archive` gives a tenant's journeys in a date window as one Arrow
table, by default only the latest revision of each; :func:`archive_files`
lists the files per tenant for readers that read them themselves, e.g.
``ray.data.read_parquet`` in ``jobs.retrain`` (with
:data:`~sinks.parquet_archive.ANY_VERSION_SCHEMA`, then keeping the highest
revision per ``journey_id``). Only the matching ``tenant_id=``/``date=``
directories are listed; temporary files are skipped.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from sinks.parquet_archive import (
    ANY_VERSION_SCHEMA,
    PARTITION_SCHEMA,
    READ_SCHEMA,
    ArchiveError,
    ArchiveLocation,
    _join,
    _tenant_dir,
    archive_location,
    archive_partitioning,
)

__all__ = ["archive_files", "latest_revisions", "read_archive"]


def _iso_date(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        parsed = dt.date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise ArchiveError(f"{name}={value!r} is not a date: use YYYY-MM-DD, e.g. '2026-01-31'")
    return parsed.isoformat()


def _subdirs(fs: pafs.FileSystem, path: str, key: str) -> list[tuple[str, str]]:
    """``(decoded value, path)`` of the ``key=value`` directories directly in ``path``."""
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    out = []
    for info in infos:
        name = info.base_name
        if info.type == pafs.FileType.Directory and name.startswith(key + "="):
            out.append((urllib.parse.unquote(name[len(key) + 1 :]), info.path))
    return sorted(out)


def archive_files(
    uri: str,
    tenant_id: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    *,
    filesystem: pafs.FileSystem | None = None,
) -> tuple[ArchiveLocation, dict[str, list[str]]]:
    """The archive's location and its data files per tenant, for ``tenant_id`` (all when None) and the dates.

    Dates are ``YYYY-MM-DD`` (UTC date of ``closed_at``), both inclusive,
    either open when None. Only the root, the tenant directories and the
    matching ``date=`` directories are listed; temporary files are skipped.
    Tenants without files in the window are absent. The paths are in
    ``location.filesystem``: give both to ``ray.data.read_parquet(paths,
    filesystem=..., schema=ANY_VERSION_SCHEMA)`` (the files hold
    :data:`~sinks.parquet_archive.ARCHIVE_SCHEMA`; those written before
    revisions existed lack ``revision``, which the schema reads as null,
    meaning 0). Keep the highest revision per ``journey_id``, as
    ``jobs.retrain`` does.
    """
    start, end = _iso_date(start_date, "start_date"), _iso_date(end_date, "end_date")
    if start is not None and end is not None and end < start:
        raise ArchiveError(f"end_date {end} is before start_date {start}: swap them")
    location = archive_location(uri, filesystem)
    fs, root = location
    if tenant_id is not None:
        tenant_dirs = [(tenant_id, _join(root, _tenant_dir(tenant_id)))]
    else:
        tenant_dirs = _subdirs(fs, root, "tenant_id")
    files: dict[str, list[str]] = {}
    for tenant, tenant_path in tenant_dirs:
        paths = []
        for date, date_path in _subdirs(fs, tenant_path, "date"):
            if (start is None or date >= start) and (end is None or date <= end):
                for info in fs.get_file_info(pafs.FileSelector(date_path, allow_not_found=True)):
                    name = info.base_name
                    if info.type == pafs.FileType.File and name.endswith(".parquet") and name[:1] not in "_.":
                        paths.append(info.path)
        if paths:
            files[tenant] = sorted(paths)
    return location, files


def read_archive(
    uri: str,
    tenant_id: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    *,
    latest: bool = True,
    filesystem: pafs.FileSystem | None = None,
) -> pa.Table:
    """The archived journeys of ``tenant_id`` (all when None) closed from ``start_date`` to ``end_date``.

    Dates as in :func:`archive_files`, which finds the files: only the
    matching ``tenant_id=``/``date=`` directories are listed and read. They
    are read as a ``pyarrow.dataset`` with :func:`archive_partitioning` and
    the same partition filter. Columns: :data:`READ_SCHEMA` (``tenant_id``,
    ``date`` as date32, then :data:`ARCHIVE_SCHEMA`); files written before
    revisions existed read as revision 0. An empty or missing archive gives
    an empty table.

    With ``latest`` (the default) each journey is one row, its highest
    revision among the rows read (:func:`latest_revisions`): a restated
    conversion's current journey, and one copy of a journey a restart
    without recovery wrote twice. ``latest=False`` returns every row: each
    archived revision, and copies.
    """
    (fs, root), files = archive_files(uri, tenant_id, start_date, end_date, filesystem=filesystem)
    dataset = ds.dataset(
        sorted(path for paths in files.values() for path in paths),
        schema=pa.schema([*ANY_VERSION_SCHEMA, *PARTITION_SCHEMA]),
        format="parquet",
        filesystem=fs,
        partitioning=archive_partitioning(),
        partition_base_dir=root,
    )
    condition: ds.Expression | None = None
    for expr in (
        ds.field("tenant_id") == tenant_id if tenant_id is not None else None,
        ds.field("date") >= dt.date.fromisoformat(start_date) if start_date is not None else None,
        ds.field("date") <= dt.date.fromisoformat(end_date) if end_date is not None else None,
    ):
        if expr is not None:
            condition = expr if condition is None else condition & expr
    table = dataset.to_table(filter=condition)
    revision = table.schema.get_field_index("revision")
    table = table.set_column(revision, "revision", pc.fill_null(table.column(revision), 0))
    table = table.select(READ_SCHEMA.names).cast(READ_SCHEMA)
    return latest_revisions(table) if latest else table


def latest_revisions(table: pa.Table, keys: tuple[str, ...] = ("tenant_id", "journey_id")) -> pa.Table:
    """The rows of ``table`` with the highest ``revision`` of their ``keys``, one per key, in ``table`` order.

    Of rows with the same keys and revision (copies), the first is kept. ``revision``
    must not be null (:func:`read_archive` makes a missing one 0).

    >>> t = pa.table({"tenant_id": ["a", "a", "b", "a", "a"], "journey_id": ["j", "k", "j", "j", "k"],
    ...               "revision": [0, 0, 5, 2, 0], "n": [1, 2, 3, 4, 5]})
    >>> latest_revisions(t).to_pydict()["n"]
    [2, 3, 4]
    """
    n = table.num_rows
    if n < 2:
        return table
    order = pc.sort_indices(  # stable: copies stay in table order
        table, [*((k, "ascending") for k in keys), ("revision", "descending")]
    )
    sorted_keys = table.select(list(keys)).take(order).combine_chunks()
    head, tail = sorted_keys.slice(0, n - 1), sorted_keys.slice(1)
    same: pa.ChunkedArray | pa.Array | None = None
    for k in keys:
        equal = pc.equal(tail[k], head[k])
        same = equal if same is None else pc.and_(same, equal)
    assert same is not None
    if not pc.any(same).as_py():
        return table
    first = pa.concat_arrays([pa.array([True]), pc.invert(same).combine_chunks()])
    return table.take(order.filter(first).sort())
