"""The in-process CPU benchmark runs the real flow over load-test traffic and reports what it measured."""

from __future__ import annotations

import json
from pathlib import Path

from loadtest.flow_cpu import main, records, run_once


def test_records_are_the_load_tests_traffic_in_the_past() -> None:
    import time

    recs = records(300, rate=300)
    assert len(recs) == 300
    assert len({r.position.partition for r in recs}) > 1  # several streams, as the load test publishes
    stamps = [json.loads(r.payload)["timestamp"] for r in recs if _parses(r.payload)]
    assert stamps and max(stamps) <= time.time() * 1000  # none in the future, so none is refused for it


def test_a_run_credits_conversions_and_closes_windows() -> None:
    _, rows = run_once(records(600, rate=600))
    assert rows > 0


def test_a_run_tunes_the_collector_as_a_flow_process_does_and_restores_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import gc

    from flows.gc_policy import GC_THRESHOLDS
    from loadtest import flow_cpu

    seen: list[tuple[int, ...]] = []
    monkeypatch.setattr(flow_cpu, "run_main", lambda flow: seen.append(gc.get_threshold()))
    before = gc.get_threshold()
    run_once(records(50, rate=50))
    assert seen == [GC_THRESHOLDS]  # the flow ran with the live flow's thresholds
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0  # and the process got its own back


def test_cli_prints_and_writes_the_medians(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cpu.json"
    assert main(["--events", "300", "--rate", "300", "--runs", "2", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["events"] == 300 and figures["runs"] == 2 and len(figures["seconds"]) == 2
    assert figures["median_events_per_s"] > 0 and figures["python_loop_s"] > 0
    assert f"{figures['median_events_per_s']:,} events/s" in capsys.readouterr().out


def _parses(payload: bytes) -> bool:
    """A well-formed copy (the traffic holds 0.1% broken ones, as the load test does)."""
    try:
        return isinstance(json.loads(payload).get("timestamp"), int)
    except (ValueError, AttributeError):
        return False
