"""Per-tenant retention end to end: `creditflow run` expires as it writes, `creditflow retention` after a change.

Two tenants, each with a person who converted 200 days ago and one who converted
5 days ago. ``brief`` keeps person-level data 100 days, ``keeper`` forever. After
the run, ``brief``'s old conversion is in no ClickHouse table and no archive file,
everything of ``keeper`` is; lowering ``keeper`` to 100 days and running
``creditflow retention`` then removes its old conversion too.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from tests_support import query

from sinks.archive_reader import read_archive

pytestmark = pytest.mark.integration

DAY = 86_400_000
NOW = time.time_ns() // 1_000_000
OLD, RECENT = NOW - 200 * DAY, NOW - 5 * DAY


def journey(tenant_id: str, person: str, ts: int) -> list[bytes]:
    """A click and, an hour later, a conversion ``<tenant>-<person>`` of user ``person``."""
    common = {"tenant_id": tenant_id, "user_id": person}
    return [
        orjson.dumps({"event_id": f"{person}-c", "event_type": "click", "timestamp": ts, "channel": "email", **common}),
        orjson.dumps(
            {
                "event_id": f"{person}-v",
                "event_type": "conversion",
                "timestamp": ts + 3_600_000,
                "conversion": {"conversion_id": f"{tenant_id}-{person}", "value": 10},
                **common,
            }
        ),
    ]


def creditflow(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "creditflow.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return done


def conversion_ids(data_dir: Path) -> dict[str, list[str]]:
    """Per table, the conversion ids ClickHouse still shows."""
    dsn = f"chdb://{data_dir / 'clickhouse'}"
    return {
        table: sorted({r[0] for r in query(dsn, f"SELECT conversion_id FROM {table}")})
        for table in ("conversions", "attribution_credits", "conversions_latest", "attribution_credits_latest")
    }


def archived(data_dir: Path) -> list[str]:
    table = read_archive(str(data_dir / "archive"), latest=False)
    return sorted(
        f"{t}:{p}" for t, p in zip(table["tenant_id"].to_pylist(), table["person_id"].to_pylist(), strict=True)
    )


def test_run_expires_each_tenants_old_rows_and_the_command_applies_a_lowered_setting(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    lines = [
        *journey("brief", "ann", OLD),
        *journey("keeper", "bob", OLD),
        *journey("brief", "cat", RECENT),
        *journey("keeper", "dan", RECENT),
    ]
    events.write_bytes(b"\n".join(lines) + b"\n")
    tenants = tmp_path / "tenants.toml"
    tenants.write_text("[tenants.brief]\nretention_days = 100\n[tenants.keeper]\n")
    data_dir = tmp_path / "data"

    creditflow(
        tmp_path, "run", "--source", f"file:{events}", "--tenants", str(tenants), "--data-dir", str(data_dir),
        "--archive-flush-s", "0.5", "--no-summary",
    )  # fmt: skip

    everything_but_ann = ["brief-cat", "keeper-bob", "keeper-dan"]
    assert conversion_ids(data_dir) == dict.fromkeys(conversion_ids(data_dir), everything_but_ann)
    assert archived(data_dir) == ["brief:u:cat", "keeper:u:bob", "keeper:u:dan"]

    tenants.write_text("[defaults]\nretention_days = 100\n")
    done = creditflow(tmp_path, "retention", "--tenants", str(tenants), "--data-dir", str(data_dir))

    assert conversion_ids(data_dir) == dict.fromkeys(conversion_ids(data_dir), ["brief-cat", "keeper-dan"])
    assert archived(data_dir) == ["brief:u:cat", "keeper:u:dan"]
    assert "'conversions': 1" in done.stdout and "attribution_credits" in done.stdout


def test_a_retention_shorter_than_state_keeps_data_is_refused_with_the_fix(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.toml"
    tenants.write_text("[tenants.brief]\nretention_days = 60\n")
    done = subprocess.run(
        [sys.executable, "-m", "creditflow.cli", "retention", "--tenants", str(tenants), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "retention_days (60) is shorter than flow state may keep a person's data (90 days" in done.stderr
    assert "raise retention_days to at least 90" in done.stderr
