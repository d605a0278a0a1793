"""The retrain job's Ray read of the archive: files of every version, each journey's latest revision.

A local Ray (started and stopped here) reads an archive holding a file written before
revisions existed (no ``revision`` column) and files of the current sink, with a
conversion restated across them; training sees each journey once, on its latest path.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from jobs.retrain import _ray_init, journeys_of, read_journeys
from sinks.archive_reader import archive_files, read_archive
from tests.sinks.archive_rows import EXPIRED_Q, archive, converted, expired, write_old_file

pytestmark = pytest.mark.slow


def test_ray_reads_old_and_new_files_and_training_sees_the_latest_revision(tmp_path: Path) -> None:
    import ray

    write_old_file(tmp_path, [converted("o1", ("email",)), converted("o2", ("social",)), expired("q")])
    archive(
        tmp_path,
        [converted("o1", ("email", "search", "display"), revision=2)],
        [converted("o1", ("email", "search"), revision=1)],  # an older revision in a later file
    )
    location, files = archive_files(str(tmp_path))
    assert len(files["acme"]) == 3

    started = _ray_init(None)
    try:
        tables = ray.get(read_journeys(files["acme"], location.filesystem).to_arrow_refs())
    finally:
        if started:
            ray.shutdown()
    table = pa.concat_tables(tables)
    assert table.num_rows == 5 and table.column("revision").null_count == 3, "the old file's rows read as null"

    got = journeys_of(table)
    channels = sorted(([c for c, _ in touches], converted_) for touches, converted_ in got)
    assert channels == [(["display"], False), (["email", "search", "display"], True), (["social"], True)]
    assert sorted(read_archive(str(tmp_path))["journey_id"].to_pylist()) == sorted(
        ["converted:o1", "converted:o2", EXPIRED_Q]
    )
