"""insert_rows: the rows land, and nothing of the insert outlives it (no reference cycle for the collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.insert import InsertContext

from sinks.clickhouse_client import ClickHouseSettings, connect, insert_rows


@pytest.fixture
def client(settings: ClickHouseSettings) -> Iterator[Client]:
    c = connect(settings.dsn)
    try:
        c.command("CREATE TABLE t (k String, v Float64) ENGINE = MergeTree ORDER BY k")
        yield c
    finally:
        c.close()


def _live_contexts() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is InsertContext)


@pytest.mark.parametrize("column_oriented", [False, True], ids=["rows", "columns"])
def test_rows_land_and_the_insert_context_is_freed_without_the_collector(client: Client, column_oriented: bool) -> None:
    types = client.create_insert_context("t", ["k", "v"]).column_types
    rows = [("a", 1.5), ("b", 2.0)]
    data = [list(c) for c in zip(*rows, strict=True)] if column_oriented else rows
    gc.collect()
    before = _live_contexts()
    gc.disable()  # only reference counting may free it now
    try:
        for _ in range(3):
            insert_rows(client, "t", data, ("k", "v"), types, {}, column_oriented=column_oriented)
        alive = _live_contexts() - before
    finally:
        gc.enable()
    assert alive == 0  # clickhouse-connect's contexts hold a bound method of themselves; insert_rows breaks it
    assert sorted(client.query("SELECT k, sum(v) FROM t GROUP BY k").result_rows) == [("a", 4.5), ("b", 6.0)]
