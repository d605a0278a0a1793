"""What retention costs the ClickHouse sink: a run of ``expire_rows`` on a filled table, per case.

    python -m loadtest.retention_cost --rows 2000000 --runs 3

Fills embedded chDB (under ``--out``, default ``loadtest/out/retention-cost``) with
``--rows`` credits and as many conversions of ten tenants, spread evenly over 400
days of event time in monthly partitions, written in 20 inserts like a running sink.
Then times, with the tenants at 395 days retention, each median of ``--runs``:

* ``nothing due`` - the steady state between days: the count finds nothing, no DELETE;
* ``one day due`` - the hourly run that finds the rows of the day that aged out;
* ``30 days due`` - the first run after lowering retention by a month.

Prints each case and writes ``report.json``. The sink runs this inside ``snapshot()``
at most once per hour, so the ``one day due`` figure is what a snapshot pays then.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from creditflow.config import DAY_MS, TenantConfig, TenantConfigs
from sinks.clickhouse_client import connect
from sinks.clickhouse_migrations import migrate
from sinks.clickhouse_retention import RETAINED_TABLES, expire_rows

TENANTS = [f"tenant-{i}" for i in range(10)]
SPAN_DAYS = 400
NOW_MS = 1_800_000_000_000


_COMMON = {
    "tenant_id": f"arrayElement({TENANTS}, 1 + number % {len(TENANTS)})",
    "conversion_id": "concat('conv-', toString(number))",
    "person_id": "concat('u:', toString(number % 100000))",
    "scored_at": "now64(3)",
}
_COLUMNS = {
    "attribution_credits": {
        "model": "'linear'",
        "model_version": "1",
        "channel": "'search'",
        "touch_event_id": "toString(number)",
        "touch_ts": "conversion_ts",
        "credit": "1.0",
        "revenue_credit": "1.0",
    },
    "conversions": {"event_id": "toString(number)", "value": "1.0", "currency": "'EUR'", "touch_count": "1"},
}


def fill(client: Any, rows: int) -> None:
    """``rows`` credits and conversions over ``SPAN_DAYS`` days, in 20 inserts per table (unset columns default)."""
    chunks = 20
    per = rows // chunks
    step_ms = SPAN_DAYS * DAY_MS // rows
    start_ms = NOW_MS - SPAN_DAYS * DAY_MS
    for c in range(chunks):
        for table, extra in _COLUMNS.items():
            columns = {**_COMMON, **extra}
            select = ", ".join(f"{expr} AS {name}" for name, expr in columns.items())
            client.command(
                f"INSERT INTO {table} ({', '.join(columns)}, conversion_ts) SELECT {', '.join(columns)}, conversion_ts "
                f"FROM (SELECT number, fromUnixTimestamp64Milli(toInt64({start_ms} + number * {step_ms}), 'UTC') "
                f"AS conversion_ts, {select} FROM numbers({c * per}, {per}))",
                settings={"insert_deduplicate": 0},
            )
        print(f"  filled {(c + 1) * per:,} of {rows:,} rows per table", file=sys.stderr, flush=True)


def timed(client: Any, configs: TenantConfigs, now_ms: int) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    deleted = expire_rows(client, configs, now_ms=now_ms)
    return time.perf_counter() - started, deleted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("loadtest/out/retention-cost"))
    args = ap.parse_args(argv)
    report: dict[str, object] = {"rows_per_table": args.rows, "tenants": len(TENANTS), "span_days": SPAN_DAYS}
    cases: dict[str, list[float]] = {"nothing due": [], "one day due": [], "30 days due": []}
    deleted_of: dict[str, dict[str, int]] = {}
    for run in range(args.runs):
        shutil.rmtree(args.out, ignore_errors=True)
        args.out.mkdir(parents=True)
        client = connect(f"chdb://{args.out.resolve()}/chdb")
        try:
            migrate(client)
            fill(client, args.rows)
            keep = TenantConfigs(TenantConfig(retention_days=395))
            timed(client, keep, NOW_MS)  # the 5 oldest days go once: the state a running sink keeps
            for name, configs, now in (
                ("nothing due", keep, NOW_MS),
                ("one day due", keep, NOW_MS + DAY_MS),
                ("30 days due", TenantConfigs(TenantConfig(retention_days=365)), NOW_MS + DAY_MS),
            ):
                seconds, deleted = timed(client, configs, now)
                cases[name].append(seconds)
                deleted_of[name] = deleted
                print(f"run {run + 1}: {name}: {seconds * 1000:.0f} ms, deleted {deleted}", file=sys.stderr, flush=True)
        finally:
            client.close()
    report["tables"] = list(RETAINED_TABLES)
    summary: dict[str, dict[str, Any]] = {
        name: {
            "median_ms": round(statistics.median(s) * 1000, 1),
            "runs_ms": [round(x * 1000, 1) for x in s],
            "deleted": deleted_of[name],
        }
        for name, s in cases.items()
    }
    report["cases"] = summary
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    for name, case in summary.items():
        print(f"{name:>12}: median {case['median_ms']} ms over {args.runs} runs, deleted {case['deleted']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
