"""The write-behind buffer: timely background flushes, drain before snapshots, backpressure, errors."""

from __future__ import annotations

import threading
import time

import pytest

from sinks.clickhouse import SINK_PARTITION, ClickHouseSink
from sinks.clickhouse_client import ClickHouseSettings, ClickHouseSinkError
from sinks.write_behind import WriteBehind
from tests.sinks.test_clickhouse import count, credit, kpi


def test_items_are_flushed_within_the_interval_without_more_calls() -> None:
    flushed: list[tuple[float, list[int]]] = []
    wb = WriteBehind(lambda items: flushed.append((time.monotonic(), items)), interval_s=0.05, flush_rows=1000)
    added = time.monotonic()
    wb.add([1, 2])
    deadline = time.monotonic() + 2
    while not flushed and time.monotonic() < deadline:
        time.sleep(0.005)
    assert [items for _, items in flushed] == [[1, 2]]
    assert flushed[0][0] - added < 0.5
    wb.close()


def test_a_full_flush_size_goes_out_at_once_and_small_adds_are_combined() -> None:
    flushed: list[list[int]] = []
    wb = WriteBehind(flushed.append, interval_s=30.0, flush_rows=3)
    wb.add([1])
    wb.add([2])
    wb.add([3])  # reaches flush_rows: no need to wait 30 s
    deadline = time.monotonic() + 2
    while not flushed and time.monotonic() < deadline:
        time.sleep(0.005)
    assert flushed == [[1, 2, 3]]
    wb.close()


def test_drain_returns_only_after_everything_is_flushed() -> None:
    release = threading.Event()
    flushed: list[int] = []

    def slow(items: list[int]) -> None:
        release.wait(5)
        flushed.extend(items)

    wb = WriteBehind(slow, interval_s=0.01, flush_rows=10)
    wb.add([1, 2, 3])
    threading.Timer(0.1, release.set).start()
    wb.drain()
    assert flushed == [1, 2, 3] and wb.pending == 0
    wb.close()


def test_add_blocks_while_the_buffer_is_full() -> None:
    release = threading.Event()
    wb = WriteBehind(lambda items: release.wait(5), interval_s=0.01, flush_rows=2, max_pending=4)
    wb.add([1, 2])
    time.sleep(0.05)  # the thread took them and is stuck in the flush
    wb.add([3, 4])  # 4 pending: full
    blocked = threading.Thread(target=wb.add, args=([5],))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive(), "add must wait while max_pending items are unwritten"
    release.set()
    blocked.join(2)
    assert not blocked.is_alive()
    wb.close()


def test_a_failed_flush_is_raised_in_the_callers_thread() -> None:
    def fail(items: list[int]) -> None:
        raise ClickHouseSinkError("insert into t failed: fix the table")

    wb = WriteBehind(fail, interval_s=0.01, flush_rows=1)
    wb.add([1])
    with pytest.raises(ClickHouseSinkError, match="fix the table"):
        wb.drain()
    with pytest.raises(ClickHouseSinkError):
        wb.add([2])
    with pytest.raises(ClickHouseSinkError):
        wb.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        WriteBehind(print, flush_rows=10, max_pending=5)


def test_the_sink_in_write_behind_mode_writes_before_its_snapshot_returns(tmp_path) -> None:
    settings = ClickHouseSettings(f"chdb://{tmp_path}/chdb", write_behind_s=10.0, write_behind_rows=10_000)
    part = ClickHouseSink(settings).build_part("out", SINK_PARTITION, None)
    try:
        part.write_batch([credit(i) for i in range(5)])
        part.write_batch([kpi(0)])
        assert count(part.client, "attribution_credits") == 0  # waiting in the buffer (10 s interval)
        part.snapshot()
        assert count(part.client, "attribution_credits") == 5
        assert count(part.client, "kpi_windows") == 1
        commits = part.client.query("SELECT count(DISTINCT batch_at) FROM sink_commits").result_rows[0][0]
        assert commits == 1  # both write_batch calls went out in one flush
        with pytest.raises(ClickHouseSinkError, match="maps to no table"):
            part.write_batch(["not a row"])  # type: ignore[list-item]
    finally:
        part.close()
