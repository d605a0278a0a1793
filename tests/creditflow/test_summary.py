"""The end-of-run summary, read from real embedded ClickHouse (chDB) written through the sink."""

from __future__ import annotations

from pathlib import Path

import pytest

from creditflow.summary import credit_by_channel, render_summary
from sinks.clickhouse import SINK_PARTITION, ClickHouseSink
from sinks.clickhouse_client import ClickHouseSettings
from tests.sinks.restatements import scoring

pytestmark = pytest.mark.integration


def test_a_restated_conversion_counts_once(tmp_path: Path) -> None:
    part = ClickHouseSink(ClickHouseSettings(f"chdb://{tmp_path}/chdb")).build_part("out", SINK_PARTITION, None)
    try:
        part.write_batch(scoring("conv0", 0, ("a", "b", "c")))
        part.write_batch(scoring("conv0", 1, ("a", "b")))  # restated: both revisions stay in the tables
        part.write_batch(scoring("conv1", 0, ("x",), channel="search"))
        assert credit_by_channel(part.client) == {
            "email": {"last_touch": (1.0, 100.0), "linear": (1.0, 100.0)},
            "search": {"last_touch": (1.0, 100.0), "linear": (1.0, 100.0)},
        }
        assert "conversions: 2 (2 attributed), revenue 200.00" in render_summary(part.client)
    finally:
        part.close()
