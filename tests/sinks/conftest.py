"""Fixtures shared by the ClickHouse sink tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from sinks.clickhouse_client import ClickHouseSettings


@pytest.fixture
def settings(tmp_path: Path) -> ClickHouseSettings:
    """Embedded chDB under the test's own directory, with tiny retry waits (modules may override it)."""
    return ClickHouseSettings(f"chdb://{tmp_path}/chdb", initial_backoff_s=0.001, max_backoff_s=0.002)
