"""Right to be forgotten in ClickHouse, on real chDB: the sink erases, the suppression list holds only hashes.

Two persons of tenant t1: Ann (``u:ann-7f3e``, also known as ``a:anon-ann-51``)
and Bob. Ann is forgotten; every row naming her must go, every row of Bob stay,
and neither the tables nor ClickHouse's mutation records may keep her ids. The
deletes write patch parts (migration 0008); on an older server they fall back
to mutations.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from creditflow.events import ConversionRow, CreditRow, DeadLetter, SinkRow, SourcePosition
from creditflow.forgotten import ForgetPerson, ForgottenIds
from sinks.clickhouse import (
    SINK_PARTITION,
    ClickHouseSink,
    ClickHouseSinkPartition,
    ClientFactory,
    lookup_sql,
    replayable_keys_sql,
)
from sinks.clickhouse_client import ClickHouseSettings, connect
from sinks.clickhouse_forget import ERASED_TABLES, PATCH_DELETE, erase_persons, load_forgotten, sweep_clickhouse
from sinks.clickhouse_migrations import applied_versions
from sinks.clickhouse_rows import KEY_COLUMNS
from tests.sinks.restatements import T0, scoring
from tests.sinks.sink_restarts import RESTART_MODES, restart
from tests.sinks.test_clickhouse import count, kpi, scalar

pytestmark = pytest.mark.integration

ANN_USER, ANN_ANON, BOB_USER = "ann-7f3e", "anon-ann-51", "bob-91c2"
ANN, ANN_A, BOB = "u:" + ANN_USER, "a:" + ANN_ANON, "u:" + BOB_USER
RAW_IDS = (ANN_USER, ANN_ANON)
"""What must not survive anywhere once Ann is forgotten."""


def salt_of(tenant_id: str) -> bytes:
    return b"test-salt-of-" + tenant_id.encode()


IDS = ForgottenIds(salt_of)


def forget(person_key: str, tenant_id: str = "t1") -> ForgetPerson:
    return ForgetPerson(tenant_id, person_key, IDS.hash_of(tenant_id, person_key), T0 + 1_000)


def person_rows(person_key: str, conversion_id: str, revisions: int = 2, tenant_id: str = "t1") -> list[SinkRow]:
    """Credits and conversion rows of ``revisions`` scorings of one conversion of ``person_key``."""
    rows: list[SinkRow] = []
    for revision in range(revisions):
        touches = ("a", "b", "c")[: 3 - revision]
        for row in scoring(conversion_id, revision, touches, tenant_id=tenant_id):
            assert isinstance(row, CreditRow | ConversionRow)
            rows.append(dataclasses.replace(row, person_id=person_key))
    return rows


def letter(position: str, raw: bytes, tenant_id: str = "t1") -> DeadLetter:
    return DeadLetter(
        "invalid_event", "missing timestamp", raw, SourcePosition("redis", "events:0", position), tenant_id
    )


def letters() -> list[DeadLetter]:
    return [
        letter("1-0", b'{"type": "click", "user_id": "%s", "anonymous_id": "x1"}' % ANN_USER.encode()),
        letter("2-0", b'{"type": "click", "anonymous_id": "%s"}' % ANN_ANON.encode()),
        letter("3-0", b'{"type": "click", "user_id": "%s"}' % BOB_USER.encode()),
        letter("4-0", b'{"type": "click", "device_id": "%s"}' % ANN_USER.encode()),  # Ann's id, but as a device: stays
        letter("5-0", b'{"bad\xff\x00'),  # not JSON
        letter("6-0", b'{"type": "click", "user_id": ""}'),
    ]


KEPT_LETTERS = ["3-0", "4-0", "5-0", "6-0"]


def build(
    settings: ClickHouseSettings, write_behind_s: float | None = None, client_factory: ClientFactory | None = None
) -> ClickHouseSinkPartition:
    s = dataclasses.replace(settings, write_behind_s=write_behind_s, write_behind_rows=1_000)
    return ClickHouseSink(s, client_factory).build_part("clickhouse_out", SINK_PARTITION, None)


@pytest.fixture
def part(settings: ClickHouseSettings) -> Iterator[ClickHouseSinkPartition]:
    partition = build(settings)
    try:
        yield partition
    finally:
        partition.close()


def person_counts(client: Client, person_key: str) -> tuple[int, int]:
    """(credits, conversions) rows of ``person_key``."""
    return tuple(  # type: ignore[return-value]
        int(scalar(client, f"SELECT count() FROM {t} WHERE person_id = '{person_key}'"))
        for t in ("attribution_credits", "conversions")
    )


READS = (
    "attribution_credits",
    "attribution_credits FINAL",
    "attribution_credits_latest",
    "conversions",
    "conversions FINAL",
    "conversions_latest",
)
"""Every way a reader sees credits and conversions: the tables with and without FINAL, the latest views."""


def write_ann_and_bob(part: ClickHouseSinkPartition) -> dict[str, int]:
    """Ann's rows under her user and anonymous ids, Bob's, the dead letters; Bob's rows per way of reading."""
    part.write_batch(person_rows(ANN, "ann-c1") + person_rows(BOB, "bob-c1") + list(letters()))
    part.write_batch(person_rows(ANN_A, "ann-anon-c1", revisions=1))
    return seen_everywhere(part.client, BOB)


def seen_everywhere(client: Client, person_key: str) -> dict[str, int]:
    """Rows of ``person_key`` per way of reading (``READS``)."""
    sql = "SELECT count() FROM {} WHERE person_id = {{p:String}}"
    return {read: int(scalar_p(client, sql.format(read), p=person_key)) for read in READS}


def replay_keys(client: Client, table: str, conversion_ids: Sequence[str]) -> set[tuple[Any, ...]]:
    """The keys of ``conversion_ids`` the sink's replay checks find: its lookup and its keys-since-snapshot read."""
    found = client.query(
        lookup_sql(table), parameters={"prefixes": [("t1", c) for c in conversion_ids], "lo": 0, "hi": 2**62}
    ).result_rows
    since = client.query(replayable_keys_sql(table), parameters={"since": 0, "cap": 1_000_000}).result_rows
    return {tuple(r) for r in found} | {tuple(r) for r in since if r[1] in conversion_ids}


def patch_parts(client: Client) -> dict[str, set[str]]:
    """Per table, the columns its active patch parts hold (what a patch-part DELETE leaves on disk)."""
    rows = client.query(
        "SELECT table, groupUniqArray(column) FROM system.parts_columns WHERE database = currentDatabase() "
        "AND active AND startsWith(name, 'patch-') GROUP BY table"
    ).result_rows
    return {table: set(columns) for table, columns in rows}


PATCH_SYSTEM_COLUMNS = {"_part", "_part_data_version", "_row_exists", "_block_number", "_block_offset"}


def positions(client: Client) -> list[str]:
    return [r[0] for r in client.query("SELECT position FROM dead_letters ORDER BY position").result_rows]


def rows_naming(client: Client, needles: Sequence[str]) -> dict[str, int]:
    """Per table of the database: rows with any String-typed column (Map/Array too) containing a needle."""
    columns = client.query(
        "SELECT c.table, c.name FROM system.columns AS c JOIN system.tables AS t "
        "ON c.database = t.database AND c.table = t.name "
        "WHERE c.database = currentDatabase() AND t.engine != 'View' AND c.type LIKE '%String%'"
    ).result_rows
    by_table: dict[str, list[str]] = {}
    for table, name in columns:
        by_table.setdefault(table, []).append(name)
    assert {"attribution_credits", "conversions", "dead_letters", "forgotten_ids"} <= set(by_table)
    found = {}
    for table, names in by_table.items():
        checks = " OR ".join(f"positionCaseInsensitive(toString(`{n}`), {{id:String}}) > 0" for n in names)
        for needle in needles:
            n = int(scalar_p(client, f"SELECT count() FROM `{table}` WHERE {checks}", id=needle))
            if n:
                found[f"{table}:{needle}"] = n
    return found


def scalar_p(client: Client, sql: str, **parameters: Any) -> Any:
    return client.query(sql, parameters=parameters).result_rows[0][0]


def stored_rows(client: Client, table: str) -> int:
    """Rows in the table's active data parts (not patch parts), deleted ones included until a merge."""
    sql = (
        "SELECT sum(rows) FROM system.parts WHERE database = currentDatabase() AND active AND table = {t:String} "
        "AND NOT startsWith(name, 'patch-')"
    )
    return int(scalar_p(client, sql, t=table))


def mutation_commands(client: Client) -> list[str]:
    return [r[0] for r in client.query("SELECT command FROM system.mutations").result_rows]


def mutation_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.rglob("mutation_*.txt"))


# --- the sink erases ---------------------------------------------------------------


@pytest.mark.parametrize("write_behind_s", [None, 0.05], ids=["sync", "write_behind"])
def test_a_forgotten_person_is_erased_and_only_their_hash_is_kept(
    settings: ClickHouseSettings, tmp_path: Path, write_behind_s: float | None, caplog: pytest.LogCaptureFixture
) -> None:
    part = build(settings, write_behind_s)
    try:
        client = part.client
        # epoch 1: both persons' credits (two revisions), conversions, dead letters; other tables
        part.write_batch(person_rows(ANN, "ann-c1") + person_rows(BOB, "bob-c1") + [kpi(0)])
        part.write_batch(person_rows(ANN_A, "ann-anon-c1", revisions=1) + list(letters()))
        part.write_batch(person_rows(BOB, "bob-c2", revisions=3))
        part.snapshot()
        bob_before = person_counts(client, BOB)
        assert bob_before == (10 + 12, 2 + 3) and person_counts(client, ANN) == (10, 2)
        assert person_counts(client, ANN_A) == (6, 1)
        # Bob reuses Ann's conversion id at another time (after the dedup window): not Ann's row
        reused = [dataclasses.replace(r, person_id=BOB) for r in person_rows(ANN, "ann-c1", revisions=1)]
        reused = [dataclasses.replace(r, conversion_ts_ms=T0 + 86_400_000 * 90) for r in reused]
        part.write_batch(reused)  # type: ignore[arg-type]
        part.snapshot()
        bob_before = person_counts(client, BOB)
        bob_seen = seen_everywhere(client, BOB)
        assert patch_parts(client) == {} and mutation_commands(client) == []

        # epoch 2: more of Ann before and after the request, in other batches (the flow's other paths)
        with caplog.at_level(logging.INFO, logger="creditflow.sinks.clickhouse"):
            part.write_batch(person_rows(ANN, "ann-c2", revisions=1))
            part.write_batch([forget(ANN), forget(ANN_A)])
            part.write_batch(person_rows(ANN, "ann-c3", revisions=1))
            assert set(part.pending_erasures["t1"]) == {ANN, ANN_A}
            part.snapshot()
        assert part.pending_erasures == {}

        assert person_counts(client, ANN) == (0, 0) and person_counts(client, ANN_A) == (0, 0)
        assert seen_everywhere(client, ANN) == seen_everywhere(client, ANN_A) == dict.fromkeys(READS, 0)
        assert person_counts(client, BOB) == bob_before
        # the latest views key on the conversion id alone: Bob's reuse of ann-c1 (revision 0) was shadowed
        # by Ann's revision 1 and, hers gone, is now that conversion's latest (as with mutation deletes)
        assert seen_everywhere(client, BOB) == bob_seen | {"attribution_credits_latest": 6 + 6, "conversions_latest": 3}
        assert positions(client) == KEPT_LETTERS
        # deleted by patch parts: no mutation, and the patches hold row keys only
        assert mutation_commands(client) == [] and mutation_files(tmp_path / "chdb") == []
        patches = patch_parts(client)
        assert set(patches) == set(ERASED_TABLES)
        for table, columns in patches.items():
            assert columns == set(KEY_COLUMNS[table]) | PATCH_SYSTEM_COLUMNS, table
        assert count(client, "kpi_windows") == 1
        got = client.query("SELECT tenant_id, id_hash FROM forgotten_ids ORDER BY id_hash").result_rows
        assert got == sorted([("t1", forget(ANN).id_hash), ("t1", forget(ANN_A).id_hash)], key=lambda r: r[1])
        assert rows_naming(client, RAW_IDS) == {"dead_letters:ann-7f3e": 1}  # only the device-id letter "4-0"
        client.command("ALTER TABLE dead_letters DELETE WHERE position = '4-0'", settings={"mutations_sync": 1})
        assert rows_naming(client, RAW_IDS) == {}
        assert rows_naming(client, [BOB_USER])  # the scan does find what is there

        # the only mutation is the test's own: chDB records it, so it would show an erasure's
        commands = mutation_commands(client)
        assert len(commands) == 1 and "4-0" in commands[0]
        assert len(mutation_files(tmp_path / "chdb")) == 1
        logged = "\n".join(r.getMessage() for r in caplog.records)
        for key, deleted in (
            (ANN, "22 attribution_credits, 4 conversions"),
            (ANN_A, "6 attribution_credits, 1 conversions"),
        ):
            line = f"forgot person {forget(key).id_hash} of tenant 't1': deleted {deleted}, 1 dead_letters rows"
            assert line in logged
        assert not any(i in logged for i in RAW_IDS)

        # a replayed request is harmless: nothing more goes, nothing comes back, one hash row
        part.write_batch([forget(ANN), forget(ANN_A)])
        part.snapshot()
        assert person_counts(client, BOB) == bob_before and positions(client) == ["3-0", "5-0", "6-0"]
        assert scalar(client, "SELECT count() FROM forgotten_ids FINAL") == 2
        assert load_forgotten(client) == sorted([("t1", forget(ANN).id_hash), ("t1", forget(ANN_A).id_hash)])
    finally:
        part.close()


def test_patch_part_deletes_hide_rows_from_every_read_and_merges_keep_them_deleted(
    part: ClickHouseSinkPartition, tmp_path: Path
) -> None:
    client = part.client
    part.write_batch(person_rows(ANN, "ann-c1") + person_rows(BOB, "bob-c1") + list(letters()))
    bob_seen = seen_everywhere(client, BOB)
    part.write_batch([forget(ANN)])
    part.snapshot()
    assert mutation_commands(client) == [] and mutation_files(tmp_path / "chdb") == []
    assert set(patch_parts(client)) == set(ERASED_TABLES)
    assert seen_everywhere(client, ANN) == dict.fromkeys(READS, 0) and seen_everywhere(client, BOB) == bob_seen
    assert positions(client) == ["2-0", *KEPT_LETTERS]
    for table, bobs in (("attribution_credits", 10), ("conversions", 2)):  # the sink's replay checks
        assert replay_keys(client, table, ["ann-c1"]) == set()
        assert len(replay_keys(client, table, ["bob-c1"])) == bobs

    # rows written later under a deleted key are new rows: seen (here Bob reuses Ann's conversion id)
    reused = [dataclasses.replace(r, person_id=BOB) for r in person_rows(ANN, "ann-c1", revisions=1)]
    part.write_batch(reused)
    assert len(replay_keys(client, "conversions", ["ann-c1"])) == 1
    bob_seen = seen_everywhere(client, BOB)
    assert bob_seen["conversions_latest"] == 2 and bob_seen["attribution_credits_latest"] == 10
    # masked at once, still in the parts; a merge applies the patches and removes the rows physically
    for table in ERASED_TABLES:
        assert stored_rows(client, table) > count(client, table) > 0
        client.command(f"OPTIMIZE TABLE {table} FINAL")
        assert stored_rows(client, table) == count(client, table)
    assert seen_everywhere(client, ANN) == dict.fromkeys(READS, 0) and seen_everywhere(client, BOB) == bob_seen
    assert mutation_commands(client) == []


# --- servers that cannot delete by patch part ----------------------------------------


def migrations_before_0008(tmp_path: Path) -> Path:
    """The packaged migrations up to 0007: tables as a server that skipped 0008 has them."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    for path in sorted((Path(__file__).resolve().parents[2] / "sinks" / "migrations").glob("000[1-7]_*.sql")):
        shutil.copy(path, directory / path.name)
    return directory


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The tables whose patch-part DELETE was refused, once per warning."""
    return sorted(str(r.args[0]) for r in caplog.records if "cannot delete by patch part" in r.getMessage())


def test_tables_without_block_columns_erase_by_mutation_decided_once(
    settings: ClickHouseSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    part = build(dataclasses.replace(settings, migrations_dir=migrations_before_0008(tmp_path)))
    try:
        client = part.client
        bob_seen = write_ann_and_bob(part)
        with caplog.at_level(logging.WARNING, logger="creditflow.sinks.clickhouse"):
            part.write_batch([forget(ANN)])
            part.snapshot()
            part.write_batch([forget(ANN_A)])
            part.snapshot()
        assert refusals(caplog) == sorted(ERASED_TABLES)  # then remembered: the second erasure asks no more
        assert seen_everywhere(client, ANN) == seen_everywhere(client, ANN_A) == dict.fromkeys(READS, 0)
        assert seen_everywhere(client, BOB) == bob_seen and positions(client) == KEPT_LETTERS
        commands = mutation_commands(client)
        assert len(commands) == 6 and all("_row_exists" in c for c in commands)
        assert not [c for c in commands if any(i in c for i in RAW_IDS)]
        assert patch_parts(client) == {}
    finally:
        part.close()


class ServerWithoutLightweightUpdates:
    """chDB behind the errors of a ClickHouse too old for lightweight updates: their settings are unknown."""

    UNKNOWN = ("enable_block_number_column", *PATCH_DELETE)

    def __init__(self, real: Client) -> None:
        self._real = real

    def command(self, cmd: str, parameters: Any = None, settings: dict[str, Any] | None = None, **kw: Any) -> Any:
        for name in self.UNKNOWN:
            if name in cmd or name in (settings or {}):
                raise DatabaseError(f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)", code=115)
        return self._real.command(cmd, parameters=parameters, settings=settings, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def old_server(settings: ClickHouseSettings) -> Client:
    return ServerWithoutLightweightUpdates(connect(settings.dsn, settings.database))  # type: ignore[return-value]


def test_an_old_server_starts_and_erases_by_mutation_until_upgraded(
    settings: ClickHouseSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="creditflow.sinks.clickhouse"):
        part = build(settings, client_factory=old_server)
    try:
        client = part.client
        skipped = [r for r in caplog.records if "0008_fast_deletes: skipped statement" in r.getMessage()]
        assert len(skipped) == 3 and max(applied_versions(client)) == 7  # 0008 stays unrecorded
        bob_seen = write_ann_and_bob(part)
        with caplog.at_level(logging.WARNING, logger="creditflow.sinks.clickhouse"):
            part.write_batch([forget(ANN)])
            part.snapshot()
        assert refusals(caplog) == sorted(ERASED_TABLES)
        assert seen_everywhere(client, ANN) == dict.fromkeys(READS, 0) and seen_everywhere(client, BOB) == bob_seen
        commands = mutation_commands(client)
        assert len(commands) == 3 and not [c for c in commands if any(i in c for i in RAW_IDS)]
    finally:
        part.close()

    # the server is upgraded: the next start applies 0008 (and 0009) and the deletes write patch parts
    part = build(settings)
    try:
        assert max(applied_versions(part.client)) == 9  # 0008 and 0009
        part.write_batch([forget(ANN_A)])
        part.snapshot()
        assert seen_everywhere(part.client, ANN_A) == dict.fromkeys(READS, 0)
        assert seen_everywhere(part.client, BOB) == bob_seen and positions(part.client) == KEPT_LETTERS
        assert len(mutation_commands(part.client)) == 3 and set(patch_parts(part.client)) == set(ERASED_TABLES)
    finally:
        part.close()


@pytest.mark.parametrize("mode", RESTART_MODES)
def test_a_replay_after_a_crash_erases_again(
    part: ClickHouseSinkPartition, settings: ClickHouseSettings, mode: str
) -> None:
    """The crashed run wrote Ann's rows and her request but never reached its snapshot: the replay erases."""
    before_request = person_rows(ANN, "ann-c1") + person_rows(BOB, "bob-c1") + list(letters())
    part.write_batch(before_request)
    bob = person_counts(part.client, BOB)
    part.write_batch([forget(ANN)])
    part.pending_erasures.clear()  # the crash: the snapshot that would have erased never ran
    again = restart(part, settings, mode)
    try:
        assert person_counts(again.client, ANN) == (10, 2)
        again.write_batch(before_request)
        again.write_batch([forget(ANN)])
        again.snapshot()
        assert person_counts(again.client, ANN) == (0, 0)
        assert person_counts(again.client, BOB) == bob
        assert again.replayed_rows["forgotten_ids"] == 1
        assert count(again.client, "forgotten_ids") == 1
    finally:
        again.close()


def test_close_runs_pending_erasures(settings: ClickHouseSettings) -> None:
    part = build(settings, write_behind_s=30.0)
    part.write_batch(person_rows(ANN, "ann-c1") + person_rows(BOB, "bob-c1"))
    part.write_batch([forget(ANN)])
    part.close()  # no snapshot: the write-behind is drained, then Ann erased
    with connect(settings.dsn) as client:
        assert person_counts(client, ANN) == (0, 0)
        assert person_counts(client, BOB) == (10, 2)
        assert count(client, "forgotten_ids") == 1


def test_erasure_stays_within_the_tenant(part: ClickHouseSinkPartition) -> None:
    part.write_batch(person_rows(ANN, "ann-c1") + person_rows(ANN, "ann-c1", tenant_id="t2"))
    part.write_batch([letter("1-0", b'{"user_id": "%s"}' % ANN_USER.encode(), tenant_id="t2")])
    part.write_batch([forget(ANN, "t1")])
    part.snapshot()
    rows = part.client.query("SELECT tenant_id, count() FROM conversions GROUP BY tenant_id").result_rows
    assert rows == [("t2", 2)]
    assert positions(part.client) == ["1-0"]
    assert forget(ANN, "t1").id_hash != forget(ANN, "t2").id_hash


def test_an_empty_id_erases_no_dead_letter(part: ClickHouseSinkPartition) -> None:
    part.write_batch(list(letters()))
    assert erase_persons(part.client, "t1", {"u:": "f1:empty"}) == {
        "attribution_credits": 0, "conversions": 0, "dead_letters": 0,
    }  # fmt: skip
    assert len(positions(part.client)) == len(letters())


# --- the suppression list and the sweep ---------------------------------------------


def test_load_forgotten_works_before_the_table_exists(settings: ClickHouseSettings) -> None:
    with connect(settings.dsn) as client:
        assert load_forgotten(client) == []


def test_sweep_deletes_rows_of_forgotten_keys_that_came_back(part: ClickHouseSinkPartition) -> None:
    part.write_batch(person_rows(ANN, "ann-c1") + person_rows(BOB, "bob-c1") + list(letters()))
    part.write_batch([forget(ANN), forget(ANN_A)])
    part.snapshot()
    forgotten = ForgottenIds(salt_of, load_forgotten(part.client))
    assert len(forgotten) == 2 and forgotten.has("t1", ANN) and not forgotten.has("t1", BOB)
    assert sweep_clickhouse(part.client, forgotten) == {"attribution_credits": 0, "conversions": 0, "dead_letters": 0}

    # a late replay (or a backfill) writes Ann again, under new conversion ids and source positions
    part.write_batch(person_rows(ANN, "ann-late", revisions=3) + person_rows(ANN_A, "anon-late", revisions=1))
    part.write_batch([
        letter("7-0", b'{"anonymous_id": "%s"}' % ANN_ANON.encode()),
        letter("8-0", b'{"user_id": "%s", "device_id": "phone"}' % ANN_USER.encode()),
        letter("9-0", b'{"user_id": "%s"}' % BOB_USER.encode()),
    ])  # fmt: skip
    part.snapshot()
    bob = person_counts(part.client, BOB)
    assert person_counts(part.client, ANN) == (12, 3)

    swept = sweep_clickhouse(part.client, forgotten)
    assert swept == {"attribution_credits": 12 + 6, "conversions": 3 + 1, "dead_letters": 2}
    assert person_counts(part.client, ANN) == (0, 0) and person_counts(part.client, ANN_A) == (0, 0)
    assert person_counts(part.client, BOB) == bob
    assert positions(part.client) == KEPT_LETTERS + ["9-0"]
    assert not [c for c in mutation_commands(part.client) if any(i in c for i in RAW_IDS)]
    assert sweep_clickhouse(part.client, forgotten) == dict.fromkeys(swept, 0)
    # a tenant with nothing listed is not read at all; an unlisted person never matches
    assert sweep_clickhouse(part.client, ForgottenIds(salt_of)) == dict.fromkeys(swept, 0)
