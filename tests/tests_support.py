"""Helpers shared by the tests (importable as ``tests_support``)."""

from __future__ import annotations

import json
import subprocess
import sys


def query(dsn: str, sql: str) -> list[list]:
    """Query ClickHouse in a child process.

    chDB lets one process hold one data path at a time, and the test process may
    hold another, so integration tests read results from a fresh process.
    """
    code = (
        "import json,sys; from sinks.clickhouse_client import connect; "
        "rows = connect(sys.argv[1]).query(sys.argv[2]).result_rows; print(json.dumps(rows, default=str))"
    )
    done = subprocess.run([sys.executable, "-c", code, dsn, sql], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
