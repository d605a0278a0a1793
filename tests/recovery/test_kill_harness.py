"""SIGKILL the running flow 20 times and prove exactly-once effects against a batch recount.

Every third run is plain Python (``CREDITFLOW_PURE=1``), the others use the compiled modules
(``creditflow.native``, built by ``./dev setup``): snapshots resume across the two modes.

See ``loadtest/kill_harness.py`` for the method; ``python -m loadtest.kill_harness
--kills 50`` is the longer soak of the same harness.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from creditflow.native import status
from loadtest.kill_harness import HarnessSettings, run_harness

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_twenty_kills_across_one_and_two_processes_leave_exactly_once_effects(redis_url: str, tmp_path: Path) -> None:
    settings = HarnessSettings(
        redis_url=redis_url,
        workdir=tmp_path,
        kills=20,
        process_plan=(1, 2, 2, 1),  # one process, two, and two resumed as one
        pure_plan=(False, False, True),  # compiled runs resume plain-Python snapshots and the reverse
        persons=800,
        rng_seed=20261122,
    )
    report = run_harness(settings, say=print)
    print(report)
    assert report.kills == 20, report.early_exits
    assert report.early_exits == []
    assert report.duplicate_credit_rows == 0
    assert report.duplicate_conversions == 0
    assert report.duplicate_kpi_rows == 0
    assert report.duplicate_dead_letters == 0
    assert report.duplicate_archived_journeys == 0 and report.archived_journeys > 100  # the Parquet archive too
    assert report.mismatches == []  # credits, conversions, latest KPI rows, dead letters, archived journeys
    print(f"KPI rows restated by late events: {report.restated_kpi_rows}")
    assert report.credit_rows == report.expected_credit_rows > 1000
    assert min(report.alive_times_s) < 1.0, "some kills must land before the first snapshot"
    assert report.stream_entries_left < report.events / 2, "streams were trimmed behind the resumable position"
    assert report.pure_processes > 0
    assert report.compiled_processes > 0 or status().mode == "pure", "the native build is fresh, runs must use it"
