"""Test helper: closed journeys with revisions, and archives written by this and the older sink version.

``converted`` builds a revision of a converted journey (its id ``converted:<conversion>``,
one close time whatever the revision); ``archive`` writes lists of journeys, each by its
own run and flush (so no revision supersedes another inside the sink); ``write_old_file``
writes a file as the sink did before revisions existed, without the ``revision`` column.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from creditflow.events import ClosedJourney
from sinks.parquet_archive import (
    ARCHIVE_SCHEMA,
    SINK_PARTITION,
    ArchiveSettings,
    ParquetArchivePartition,
    ParquetArchiveSink,
    file_name,
)

__all__ = ["EXPIRED_Q", "OLD_SCHEMA", "T0", "archive", "build", "converted", "expired", "write_old_file"]

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000
OLD_SCHEMA = ARCHIVE_SCHEMA.remove(ARCHIVE_SCHEMA.get_field_index("revision"))
"""The file schema before revisions existed."""


def converted(conversion: str, channels: tuple[str, ...], revision: int = 0, tenant: str = "acme") -> ClosedJourney:
    k = len(channels)
    return ClosedJourney(
        tenant_id=tenant,
        person_id=f"p-{conversion}",
        journey_id=f"converted:{conversion}",
        outcome="converted",
        closed_at_ms=T0 + 3_600_000,
        conversion_id=conversion,
        value=20.0,
        touch_channels=channels,
        touch_ts_ms=tuple(T0 + MIN * i for i in range(k)),
        revision=revision,
    )


def expired(person: str, tenant: str = "acme") -> ClosedJourney:
    return ClosedJourney(tenant, person, f"{person}:expired:{T0}", "expired", T0, "", 0.0, ("display",), (T0 - MIN,))


EXPIRED_Q = f"q:expired:{T0}"


def build(root: Path) -> ParquetArchivePartition:
    return ParquetArchiveSink(ArchiveSettings(str(root))).build_part("archive", SINK_PARTITION, None)


def archive(root: Path, *flushes: list[ClosedJourney]) -> None:
    """Each list written by its own run and flush (so no revision supersedes another in the sink)."""
    for rows in flushes:
        part = build(root)  # continues after the highest seq
        part.write_batch(rows)
        part.close()


def write_old_file(root: Path, rows: list[ClosedJourney], seq: int = 0) -> Path:
    """A file of tenant acme, 2026-01-01, as the sink wrote it before revisions existed: no ``revision``."""
    table = pa.table(
        {
            "journey_id": [r.journey_id for r in rows],
            "person_id": [r.person_id for r in rows],
            "outcome": [r.outcome for r in rows],
            "closed_at": pa.array([r.closed_at_ms for r in rows], pa.timestamp("ms", tz="UTC")),
            "conversion_id": [r.conversion_id for r in rows],
            "value": [r.value for r in rows],
            "touches": [
                [{"channel": c, "ts": t} for c, t in zip(r.touch_channels, r.touch_ts_ms, strict=True)] for r in rows
            ],
        },
        schema=OLD_SCHEMA,
    )
    directory = root / "tenant_id=acme" / "date=2026-01-01"
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / file_name(SINK_PARTITION, seq), compression="zstd")
    return directory / file_name(SINK_PARTITION, seq)
