"""Reading the archive with revisions: the latest row per journey by default, every row on request.

A converted journey is archived again with a higher ``revision`` when its conversion
is restated (``ClosedJourney.revision``). Archives written before revisions existed
have files without a ``revision`` column; they read as revision 0, alone or mixed
with newer files. Everything is real files under ``tmp_path``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sinks.archive_reader import latest_revisions, read_archive
from sinks.parquet_archive import READ_SCHEMA
from tests.sinks.archive_rows import EXPIRED_Q, archive, build, converted, expired, write_old_file


def rows_of(table: pa.Table) -> list[tuple[str, int, list[str]]]:
    return sorted((r["journey_id"], r["revision"], [t["channel"] for t in r["touches"]]) for r in table.to_pylist())


def test_a_restated_conversion_reads_as_its_latest_revision_and_latest_false_gives_every_row(tmp_path: Path) -> None:
    archive(
        tmp_path,
        [converted("o1", ("email",)), expired("q")],
        [converted("o1", ("email", "paid_search"), revision=1)],  # a touch arrived late
    )
    assert len(list(tmp_path.rglob("*.parquet"))) == 2, "the two revisions are in two files"

    latest = read_archive(str(tmp_path))
    assert latest.schema == READ_SCHEMA
    assert rows_of(latest) == [("converted:o1", 1, ["email", "paid_search"]), (EXPIRED_Q, 0, ["display"])]

    every = read_archive(str(tmp_path), latest=False)
    assert every.schema == READ_SCHEMA
    assert rows_of(every) == [
        ("converted:o1", 0, ["email"]),
        ("converted:o1", 1, ["email", "paid_search"]),
        (EXPIRED_Q, 0, ["display"]),
    ]
    assert rows_of(read_archive(str(tmp_path), "acme", "2026-01-01", "2026-01-01")) == rows_of(latest)


def test_the_latest_revision_wins_whatever_the_order_of_files_and_per_tenant(tmp_path: Path) -> None:
    archive(
        tmp_path,
        [converted("o1", ("a", "b", "c"), revision=2), converted("o1", ("x",), tenant="globex")],
        [converted("o1", ("a",), revision=0)],  # an older revision in a later file
        [converted("o1", ("a", "b"), revision=1)],
    )
    got = {(r["tenant_id"], r["journey_id"]): r for r in read_archive(str(tmp_path)).to_pylist()}
    assert {k: (r["revision"], len(r["touches"])) for k, r in got.items()} == {
        ("acme", "converted:o1"): (2, 3),
        ("globex", "converted:o1"): (0, 1),  # the same journey_id in another tenant is another journey
    }
    assert read_archive(str(tmp_path), latest=False).num_rows == 4


def test_copies_of_a_journey_read_once_by_default(tmp_path: Path) -> None:
    """A restart without recovery writes what it replays again: the same journey and revision twice."""
    archive(tmp_path, [converted("o1", ("email",)), expired("q")], [converted("o1", ("email",)), expired("q")])
    assert read_archive(str(tmp_path)).num_rows == 2
    assert read_archive(str(tmp_path), latest=False).num_rows == 4


def test_files_without_a_revision_column_read_as_revision_0(tmp_path: Path) -> None:
    old = write_old_file(tmp_path, [converted("o1", ("email",)), expired("q")])
    assert "revision" not in pq.read_schema(old).names
    table = read_archive(str(tmp_path))
    assert table.schema == READ_SCHEMA
    assert rows_of(table) == [("converted:o1", 0, ["email"]), (EXPIRED_Q, 0, ["display"])]


def test_a_mixed_archive_of_old_and_new_files_reads_as_one(tmp_path: Path) -> None:
    write_old_file(tmp_path, [converted("o1", ("email",)), converted("o2", ("social",)), expired("q")])
    part = build(tmp_path)  # the new version continues the archive after the old file
    assert part.next_seq == 1
    part.write_batch([converted("o1", ("email", "search"), revision=1), converted("o3", ("display",))])
    part.close()
    assert len(list((tmp_path / "tenant_id=acme" / "date=2026-01-01").glob("*.parquet"))) == 2

    latest = read_archive(str(tmp_path))
    assert latest.schema == READ_SCHEMA
    assert rows_of(latest) == [
        ("converted:o1", 1, ["email", "search"]),  # restated in the new file
        ("converted:o2", 0, ["social"]),  # old file only
        ("converted:o3", 0, ["display"]),
        (EXPIRED_Q, 0, ["display"]),
    ]
    every = read_archive(str(tmp_path), latest=False)
    assert ("converted:o1", 0, ["email"]) in rows_of(every) and every.num_rows == 5
    assert every.column("revision").null_count == 0


@pytest.mark.parametrize("seed", range(5))
def test_latest_revisions_keeps_the_highest_revision_per_key_in_table_order(seed: int) -> None:
    rng = random.Random(seed)
    rows = [
        {"tenant_id": rng.choice("ab"), "journey_id": rng.choice("jkl"), "revision": rng.randrange(4), "n": n}
        for n in range(40)
    ]
    table = pa.Table.from_pylist(rows)
    best: dict[tuple[str, str], dict] = {}
    for r in rows:  # the first row of the highest revision of each key
        key = (r["tenant_id"], r["journey_id"])
        if key not in best or r["revision"] > best[key]["revision"]:
            best[key] = r
    assert latest_revisions(table).column("n").to_pylist() == sorted(r["n"] for r in best.values())
    assert latest_revisions(table.slice(0, 1)).num_rows == 1 and latest_revisions(table.slice(0, 0)).num_rows == 0
