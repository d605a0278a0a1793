"""Memory of the journey state per active person: the bound of issue 4 (500 bytes per key), measured.

``loadtest.state_memory`` feeds generated persons through the flow's own
decode and identity path into one ``JourneyLogic`` per key, exactly as Bytewax
keeps them, and counts with tracemalloc what the keys, the dict and the logics
hold. The full measurement is ``python -m loadtest.state_memory --persons 1000000``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.state_memory import BOUND_BYTES, default_configs, main, measure_bytewax_keys, measure_memory


@pytest.mark.slow
def test_journey_state_stays_under_the_bound_per_active_person() -> None:
    m = measure_memory(seed=3, persons=20_000, configs=default_configs(), progress=False)
    # a realistic journey mix, not empty state: several keys per few persons, touches and conversions kept
    assert m["keys"] > 20_000 and m["touches_per_key"] > 1.2, m
    # everything Python holds per key (key string, dict slot, logic, state, shared tables), with a margin
    assert m["bytes_per_key"] <= 0.9 * BOUND_BYTES, m
    assert m["key_str_bytes_per_key"] + m["dict_table_bytes_per_key"] < m["bytes_per_key"]
    # what each key costs the recovery store per snapshot: 292 B before touches stayed after a conversion
    # for restatement (layout 5), 341 B since
    assert m["snapshot_bytes_per_key"] <= 360, m


def test_the_benchmark_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "state_memory.json"
    result = main(["--persons", "1500", "--cpu-persons", "300", "--bytewax-keys", "0", "--json", str(out)])
    assert json.loads(out.read_text()) == result
    m = result["memory"]
    assert m["persons"] == 1500 and m["events"] > 3 * 1500 and m["keys"] > 1500
    assert 0 < m["bytes_per_key"] and 0 < m["snapshot_bytes_per_key"] and 0 < m["rss_bytes_per_key"]
    assert result["cpu"]["us_per_event"] > 0 and result["cpu"]["cpu_events"] > 900


@pytest.mark.slow
def test_the_bytewax_probe_sees_the_keys_and_their_schedule() -> None:
    bw = measure_bytewax_keys(20_000)
    # Bytewax holds each key (twice with a notify_at) in Rust maps: more than the key's text, less than a KiB
    assert 40 < bw["bytewax_bytes_per_key_without_notify_at"] < bw["bytewax_bytes_per_key"] < 1024, bw
