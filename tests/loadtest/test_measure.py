"""The load test's ClickHouse figures (``loadtest.measure.clickhouse_figures``) on real embedded ClickHouse."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from loadtest.measure import clickhouse_figures, sched_seconds, worker_thread
from sinks.clickhouse import SINK_PARTITION, ClickHouseSink
from sinks.clickhouse_client import ClickHouseSettings
from tests.sinks.restatements import T0, scoring

pytestmark = pytest.mark.integration


def test_a_restated_conversion_is_timed_from_its_first_revision(tmp_path: Path) -> None:
    part = ClickHouseSink(ClickHouseSettings(f"chdb://{tmp_path}/chdb")).build_part("out", SINK_PARTITION, None)
    try:
        part.write_batch(scoring("conv0", 0, ("a", "b", "c")) + scoring("conv1", 0, ("x",)))
        time.sleep(0.005)  # the restatement's batch gets a later stamp
        part.write_batch(scoring("conv0", 1, ("a", "b")))
        part.snapshot()  # writes the commit log's waiting rows (``commit_log_every_s``), as the flow's snapshots do
        commits = part.client.query(
            "SELECT table_name, toUnixTimestamp64Milli(batch_at), toUnixTimestamp64Milli(committed_at) "
            "FROM sink_commits ORDER BY batch_at, table_name"
        ).result_rows
        first = {table: (batch, committed) for table, batch, committed in commits[:2]}
        assert commits[2][1] > commits[0][1]
        figures = clickhouse_figures(part.client)
    finally:
        part.close()
    for key, table in (("credits", "attribution_credits"), ("conversions", "conversions")):
        batch, committed = first[table]
        # one row per conversion, dated by the first batch that made it visible; conv0 has two revisions
        assert sorted(figures[key], key=lambda row: row[3]) == [[T0, batch, committed, 1], [T0, batch, committed, 2]]
    assert figures["row_counts"]["attribution_credits"] == 6 + 2 + 4  # raw rows: both revisions
    assert figures["row_counts"]["conversions"] == 3


def test_the_worker_thread_is_the_timely_one_in_a_cluster_process_and_the_main_one_otherwise() -> None:
    pid = os.getpid()
    assert worker_thread(pid) == pid
    named, stop = threading.Event(), threading.Event()
    native: list[int] = []

    def work() -> None:
        native.append(threading.get_native_id())
        Path(f"/proc/{pid}/task/{native[0]}/comm").write_text("timely:work-0")  # as Bytewax names it
        t0 = time.thread_time()
        while time.thread_time() - t0 < 0.05:  # run a little, so its schedstat has something
            pass
        named.set()
        stop.wait(10)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert named.wait(10)
        assert worker_thread(pid) == native[0]
        times = sched_seconds(pid, native[0])
        assert times is not None and times[0] >= 0.04
    finally:
        stop.set()
        thread.join()
    assert worker_thread(2**22 + 12345) is None  # no such process
