"""The recovery-store check: the real flow, run with a real Bytewax recovery store, then changed."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

import flows.attribution
import state.journeys
import state.kpi_windows
from creditflow.config import TenantConfig, TenantConfigs
from creditflow.errors import CreditflowError
from creditflow.events import RawRecord, SourcePosition
from flows.attribution import FlowSettings, build_flow
from flows.recovery_check import (
    RECORD_NAME,
    StateCompatibilityError,
    check_recovery_store,
    move_store_aside,
    record_store_layout,
    stateful_step_ids,
    stored_step_ids,
)
from operators.sharded import SHARDS
from sinks.clickhouse import ClickHouseSink
from sinks.clickhouse_client import ClickHouseSettings
from state.shard_store import SHARD_LAYOUT

CLICK = (  # with a device and an IP, so that every stateful step (the network matcher too) gets a key
    b'{"event_id":"c1","tenant_id":"t","event_type":"click","timestamp":1767225600000,"user_id":"u",'
    b'"device_id":"d","channel":"email","context":{"ip":"203.0.113.7"}}'
)
CONVERSION = (
    b'{"event_id":"v1","tenant_id":"t","event_type":"conversion","timestamp":1767225660000,'
    b'"user_id":"u","conversion":{"conversion_id":"o1","value":10}}'
)
OUR_STEPS = {
    "creditflow.source",
    "creditflow.dedup.seen",
    "creditflow.spend_dedup.seen",
    "creditflow.identity.device",
    "creditflow.identity.links.network",
    "creditflow.identity.erasures.user_devices",
    "creditflow.attribute.journey",
    "creditflow.kpi.windows",
}


def records(*raw: bytes) -> list[RawRecord]:
    return [RawRecord(r, SourcePosition("test", "p", str(i))) for i, r in enumerate(raw)]


SPEND = (
    b'{"event_id":"s1","tenant_id":"t","event_type":"ad_spend","timestamp":1767225600000,"channel":"email",'
    b'"campaign_id":"c","metrics":{"impressions":10,"clicks":1,"cost":2.5}}'
)


GRAPH_ON = FlowSettings(configs=TenantConfigs(defaults=TenantConfig(identity_graph=True)))
"""With the identity graph, so that the network matcher gets a key too."""


def flow_of(*raw: bytes, sink: Any = None) -> Dataflow:
    """The real flow over ``raw`` plus one ad-spend report, so every stateful step keeps a key."""
    source = TestingSource(records(*raw, SPEND))
    return build_flow(source, sink if sink is not None else TestingSink([]), GRAPH_ON)


def new_store(path: Path, parts: int = 2) -> Path:
    path.mkdir(parents=True)
    init_db_dir(path, parts)
    return path


def run_with_recovery(flow: Dataflow, store: Path) -> None:
    run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(store))


def used_store(tmp_path: Path, *raw: bytes, record: bool = True) -> Path:
    """A store the real flow has run on (recorded first, as ``creditflow run`` does)."""
    store = new_store(tmp_path / "recovery")
    flow = flow_of(*raw)
    if record:
        record_store_layout(flow, store)
    run_with_recovery(flow, store)
    return store


def snapshot_of_files(store: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(store.iterdir())}


class _NoneSinkPart(StatefulSinkPartition[Any, None]):
    def write_batch(self, items: list[Any]) -> None:
        pass

    def snapshot(self) -> None:
        return None


class FixedSink(FixedPartitionedSink[Any, None]):
    """Like the ClickHouse sink: one partition whose snapshot is None."""

    def list_parts(self) -> list[str]:
        return ["clickhouse"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _NoneSinkPart:
        return _NoneSinkPart()


class _OncePart(StatelessSourcePartition[RawRecord]):
    def __init__(self, items: list[RawRecord]) -> None:
        self.items = items

    def next_batch(self) -> list[RawRecord]:
        if not self.items:
            raise StopIteration
        items, self.items = self.items, []
        return items


class OnceDynamicSource(DynamicSource[RawRecord]):
    def __init__(self, items: list[RawRecord]) -> None:
        self.items = items

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OncePart:
        return _OncePart(self.items if worker_index == 0 else [])


def renaming_stateful_batch(monkeypatch: pytest.MonkeyPatch, old: str, new: str) -> None:
    """Make every later-built flow call its stateful step ``old`` ``new`` (as a careless rename would)."""
    original: Callable[..., Any] = op.stateful_batch

    def renamed(step_id: str, up: Any, builder: Any) -> Any:
        return original(new if step_id == old else step_id, up, builder)

    monkeypatch.setattr(op, "stateful_batch", renamed)


# --- which steps keep state, checked against what Bytewax really writes ---


def test_stateful_step_ids_are_exactly_the_step_ids_bytewax_writes_to_snaps(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery")
    flow = flow_of(CLICK, CONVERSION)
    assert stateful_step_ids(flow) == OUR_STEPS
    run_with_recovery(flow, store)
    assert stored_step_ids(store) == OUR_STEPS


def test_a_fixed_partitioned_sink_keeps_state_and_the_clickhouse_sink_is_one(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery")
    flow = flow_of(CLICK, CONVERSION, sink=FixedSink())
    assert stateful_step_ids(flow) == OUR_STEPS | {"creditflow.sink"}
    run_with_recovery(flow, store)
    assert stored_step_ids(store) == OUR_STEPS | {"creditflow.sink"}
    production = flow_of(sink=ClickHouseSink(ClickHouseSettings(dsn="chdb:///nowhere")))
    assert "creditflow.sink" in stateful_step_ids(production)


def test_a_dynamic_source_keeps_no_state(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery")
    flow = build_flow(OnceDynamicSource(records(CLICK, CONVERSION, SPEND)), TestingSink([]), GRAPH_ON)
    assert stateful_step_ids(flow) == OUR_STEPS - {"creditflow.source"}
    run_with_recovery(flow, store)
    assert stored_step_ids(store) == OUR_STEPS - {"creditflow.source"}


def test_every_stateful_step_of_the_flow_has_a_known_state_layout(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery")
    steps = json.loads(record_store_layout(flow_of(sink=FixedSink()), store).read_text())["steps"]
    assert set(steps) == OUR_STEPS | {"creditflow.sink"}
    for step_id, entry in steps.items():
        if step_id in ("creditflow.source", "creditflow.sink"):
            assert entry == {"state": None, "layout": None}
        elif step_id == "creditflow.kpi.windows":
            assert isinstance(entry["layout"], int), step_id
        else:  # a new stateful step needs an entry in STATE_OF_STEP; a sharded one's layout names its shards
            assert entry["layout"].endswith(f"in {SHARDS} shards (shard layout {SHARD_LAYOUT})"), step_id


def test_a_store_of_per_key_snapshots_from_before_sharding_is_refused(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery")
    record_store_layout(flow_of(), store)
    record = json.loads((store / RECORD_NAME).read_text())
    record["steps"]["creditflow.attribute.journey"]["layout"] = 6  # as recorded before the steps were sharded
    (store / RECORD_NAME).write_text(json.dumps(record))
    with sqlite3.connect(store / "part-0.sqlite3") as db:
        db.execute(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, 1, NULL)",
            ("creditflow.attribute.journey", "t\x1fu:ann"),
        )
    with pytest.raises(StateCompatibilityError, match="stored with state layout 6 of state.journeys") as err:
        check_recovery_store(flow_of(), store)
    assert err.value.steps == ["creditflow.attribute.journey"]


# --- reading the store ---


def test_reading_the_store_changes_no_file(tmp_path: Path) -> None:
    store = used_store(tmp_path, CLICK, CONVERSION)
    before = snapshot_of_files(store)
    stored_step_ids(store)
    check_recovery_store(flow_of(CLICK), store)
    assert snapshot_of_files(store) == before


def test_snapshots_still_in_the_wal_of_a_crashed_run_are_seen(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery", parts=1)
    part = store / "part-0.sqlite3"
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    db = sqlite3.connect(part)
    try:
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES ('f.x', 'k', 1, NULL)")
        db.commit()
        for name in ("part-0.sqlite3", "part-0.sqlite3-wal"):  # copied as a kill -9 would leave them
            shutil.copy(store / name, crashed / name)
    finally:
        db.close()
    assert stored_step_ids(crashed) == {"f.x"}


def test_a_missing_or_new_store_has_no_step_ids(tmp_path: Path) -> None:
    assert stored_step_ids(tmp_path / "nothing-here") == set()
    assert stored_step_ids(new_store(tmp_path / "recovery")) == set()


def test_an_unreadable_partition_is_named(tmp_path: Path) -> None:
    store = tmp_path / "recovery"
    store.mkdir()
    (store / "part-0.sqlite3").write_bytes(b"not a database at all" * 10)
    with pytest.raises(CreditflowError, match="part-0.sqlite3"):
        stored_step_ids(store)


# --- the check ---


def test_the_same_flow_passes_and_resumes(tmp_path: Path) -> None:
    store = used_store(tmp_path, CLICK, CONVERSION)
    flow = flow_of(CLICK, CONVERSION)
    check_recovery_store(flow, store)
    record_store_layout(flow, store)
    run_with_recovery(flow, store)
    check_recovery_store(flow_of(), store)


def test_an_empty_new_store_passes_and_gets_a_record(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery")
    flow = flow_of()
    check_recovery_store(flow, store)
    check_recovery_store(flow, tmp_path / "not-created-yet")
    record = json.loads(record_store_layout(flow, store).read_text())
    assert record["flow_id"] == "creditflow"
    assert set(record["steps"]) == OUR_STEPS


def test_a_renamed_stateful_step_is_refused_naming_old_and_new_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = used_store(tmp_path, CLICK, CONVERSION)
    renaming_stateful_batch(monkeypatch, "journey", "journeys")
    with pytest.raises(StateCompatibilityError) as err:
        check_recovery_store(flow_of(), store)
    assert err.value.steps == ["creditflow.attribute.journey", "creditflow.attribute.journeys"]
    message = str(err.value)
    assert "renamed or removed steps; ignored on resume): 'creditflow.attribute.journey'\n" in message
    assert "(new or renamed; they would start empty): 'creditflow.attribute.journeys'\n" in message
    assert str(store) in message
    assert "--fresh-state" in message and f"{store}.old-<timestamp>" in message
    assert "migrate the store with a creditflow release" in message


def test_a_changed_flow_id_is_refused_naming_every_stateful_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = used_store(tmp_path, CLICK, CONVERSION)
    monkeypatch.setattr(flows.attribution, "FLOW_ID", "creditflow2")
    with pytest.raises(StateCompatibilityError) as err:
        check_recovery_store(flow_of(), store)
    assert set(err.value.steps) == OUR_STEPS | {s.replace("creditflow.", "creditflow2.") for s in OUR_STEPS}
    assert "written by flow id 'creditflow', this flow is 'creditflow2'" in str(err.value)
    assert str(err.value).count("\n  - ") == 2  # one line for the old ids, one for the new


def test_a_changed_state_layout_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = used_store(tmp_path, CLICK, CONVERSION)
    stored = state.kpi_windows.STATE_LAYOUT_VERSION
    monkeypatch.setattr(state.kpi_windows, "STATE_LAYOUT_VERSION", stored + 1)
    with pytest.raises(StateCompatibilityError) as err:
        check_recovery_store(flow_of(), store)
    assert err.value.steps == ["creditflow.kpi.windows"]
    assert (
        f"stored with state layout {stored} of state.kpi_windows, this code has layout {stored + 1}: "
        "'creditflow.kpi.windows'" in str(err.value)
    )
    with pytest.raises(StateCompatibilityError):  # and the record is not overwritten
        record_store_layout(flow_of(), store)
    assert json.loads((store / RECORD_NAME).read_text())["steps"]["creditflow.kpi.windows"]["layout"] == stored


def test_a_store_of_an_older_journey_layout_the_code_still_reads_passes(tmp_path: Path) -> None:
    # A store made by the release with journey layout 5: this code reads (and upgrades) those rows,
    # so it resumes; a layout it no longer reads (4) is refused as any other change.
    store = used_store(tmp_path, CLICK, CONVERSION)
    record_path = store / RECORD_NAME
    record = json.loads(record_path.read_text())
    journey = record["steps"]["creditflow.attribute.journey"]
    current = str(state.journeys.STATE_LAYOUT_VERSION)
    assert journey["layout"].startswith(current + " in ") and 5 in state.journeys.READABLE_LAYOUTS
    journey["layout"] = journey["layout"].replace(current, "5", 1)
    record_path.write_text(json.dumps(record))
    check_recovery_store(flow_of(), store)
    journey["layout"] = journey["layout"].replace("5", "4", 1)
    record_path.write_text(json.dumps(record))
    with pytest.raises(StateCompatibilityError) as err:
        check_recovery_store(flow_of(), store)
    assert err.value.steps == ["creditflow.attribute.journey"]
    assert "stored with state layout 4 in " in str(err.value)


def test_a_step_without_keys_yet_passes_when_the_record_lists_it(tmp_path: Path) -> None:
    store = used_store(tmp_path, CLICK)  # no conversion: dedup.seen has no snapshot
    assert stored_step_ids(store) == OUR_STEPS - {"creditflow.dedup.seen"}
    check_recovery_store(flow_of(), store)


def test_without_a_record_a_step_without_snapshots_is_refused(tmp_path: Path) -> None:
    store = used_store(tmp_path, CLICK, record=False)
    with pytest.raises(StateCompatibilityError) as err:
        check_recovery_store(flow_of(), store)
    assert err.value.steps == ["creditflow.dedup.seen"]
    assert RECORD_NAME in str(err.value)


def test_a_store_without_a_record_holding_every_step_is_adopted(tmp_path: Path) -> None:
    store = used_store(tmp_path, CLICK, CONVERSION, record=False)
    check_recovery_store(flow_of(), store)
    assert set(json.loads(record_store_layout(flow_of(), store).read_text())["steps"]) == OUR_STEPS


def test_a_new_stateful_step_missing_from_the_record_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = used_store(tmp_path, CLICK, CONVERSION)
    old_record = (store / RECORD_NAME).read_text()
    monkeypatch.setattr(flows.attribution.op, "output", _output_with_extra_stateful_step(flows.attribution.op.output))
    with pytest.raises(StateCompatibilityError) as err:
        record_store_layout(flow_of(), store)
    assert err.value.steps == ["creditflow.extra_counter.stateful_flat_map.stateful.stateful_batch"]
    assert "stateful steps the store was not made for" in str(err.value)
    assert (store / RECORD_NAME).read_text() == old_record


def _output_with_extra_stateful_step(output: Callable[..., Any]) -> Callable[..., Any]:
    def output_and_count(step_id: str, up: Any, sink: Any) -> None:
        counted = op.stateful_map("extra_counter", op.key_on("extra_key", up, lambda _: "all"), lambda n, _: (n, n))
        op.inspect("extra_sink", counted)
        output(step_id, up, sink)

    return output_and_count


def test_a_store_without_snapshots_is_re_recorded_for_the_current_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = new_store(tmp_path / "recovery")
    record_store_layout(flow_of(), store)
    monkeypatch.setattr(state.kpi_windows, "STATE_LAYOUT_VERSION", 2)
    check_recovery_store(flow_of(), store)  # nothing stored, nothing to misread
    steps = json.loads(record_store_layout(flow_of(), store).read_text())["steps"]
    assert steps["creditflow.kpi.windows"]["layout"] == 2


# --- starting fresh explicitly ---


def test_move_store_aside_keeps_the_old_store_and_a_new_one_can_be_created(tmp_path: Path) -> None:
    store = used_store(tmp_path, CLICK, CONVERSION)
    before = snapshot_of_files(store)
    moved = move_store_aside(store)
    assert moved.parent == store.parent and moved.name.startswith("recovery.old-")
    assert not store.exists()
    assert snapshot_of_files(moved) == before
    assert stored_step_ids(moved) == OUR_STEPS

    new_store(store)
    flow = flow_of(CLICK)
    check_recovery_store(flow, store)
    record_store_layout(flow, store)
    run_with_recovery(flow, store)
    check_recovery_store(flow_of(), store)

    again = move_store_aside(store)
    assert again != moved and again.exists() and moved.exists()


def test_move_store_aside_without_a_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(CreditflowError, match="no recovery store"):
        move_store_aside(tmp_path / "recovery")
