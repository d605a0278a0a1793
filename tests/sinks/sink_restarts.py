"""Test helper: the ClickHouse sink partition a restarted flow builds.

A replay only reaches the sink after a restart, through a new partition: resumed
from the old one's snapshot (``resumed`` mode: keys written since are loaded), or
without a snapshot over tables that already hold rows (``lookup`` mode: every
batch is checked in ClickHouse).
"""

from __future__ import annotations

from sinks.clickhouse import SINK_PARTITION, ClickHouseSink, ClickHouseSinkPartition, ClientFactory
from sinks.clickhouse_client import ClickHouseSettings

RESTART_MODES = ("resumed", "lookup")


def restart(
    part: ClickHouseSinkPartition,
    settings: ClickHouseSettings,
    mode: str,
    client_factory: ClientFactory | None = None,
) -> ClickHouseSinkPartition:
    """A new partition over the same tables, as after a crash of the flow that wrote with ``part``."""
    resume = part.snapshot() if mode == "resumed" else None
    again = ClickHouseSink(settings, client_factory).build_part("out", SINK_PARTITION, resume)
    assert again.mode == mode, (again.mode, mode)
    return again
