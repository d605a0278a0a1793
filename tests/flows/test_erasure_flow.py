"""A deletion request erases the person in the flow: state of every key, later events, a replay (testing runner)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from creditflow.config import DAY_MS, TenantConfig, TenantConfigs
from creditflow.events import ConversionRow, CreditRow, SuppressedEvent
from creditflow.forgotten import ForgetPerson, ForgottenIds
from creditflow.pii import PiiHasher
from flows.attribution import FlowSettings, build_flow
from flows.recovery_forget import forget_in_recovery_store
from operators.sharded import ShardedState
from state.kpi_windows import WindowSettings
from state.recovered import live_states
from tests.flows.test_attribution_flow import T0, by_type, ev, records
from tests.flows.test_identity_flow import conversion

HOUR = 3_600_000
ANN_IDS = ("ann5c", "lap5c", "ph5c")


def history() -> list[bytes]:
    """Ann browses on a laptop, logs in there and on her phone, buys; Bob buys too."""
    return [
        ev("ad", "t1", "click", T0, anonymous_id="lap5c", channel="display"),
        ev("login", "t1", "identify", T0 + HOUR, anonymous_id="lap5c", user_id="ann5c"),
        ev("seo", "t1", "click", T0 + 2 * HOUR, device_id="ph5c", user_id="ann5c", channel="organic_search"),
        conversion("o1", T0 + 3 * HOUR, user_id="ann5c"),
        ev("b-ad", "t1", "click", T0, anonymous_id="tablet-b", user_id="bob", channel="email"),
        conversion("o2", T0 + 3 * HOUR, user_id="bob"),
    ]


def after_erasure() -> list[bytes]:
    return [
        ev("del", "t1", "deletion_request", T0 + 4 * HOUR, user_id="ann5c"),
        ev("late-lap", "t1", "click", T0 + 5 * HOUR, anonymous_id="lap5c", channel="email"),
        ev("late-ph", "t1", "click", T0 + 5 * HOUR, device_id="ph5c", channel="email"),
        conversion("o3", T0 + 6 * HOUR, user_id="ann5c"),
        ev("b-more", "t1", "click", T0 + 5 * HOUR, anonymous_id="tablet-b", channel="display"),
        conversion("o4", T0 + 6 * HOUR, user_id="bob"),
    ]


def settings(store: Path, forgotten: ForgottenIds | None = None) -> FlowSettings:
    return FlowSettings(
        configs=TenantConfigs(defaults=TenantConfig(identity_graph=True)),
        windows=WindowSettings(length_ms=5000, allowed_lateness_ms=60 * DAY_MS),
        forgotten=forgotten,
        shards=ShardedState(store),  # as `creditflow run`: the keys' state in shard files next to Bytewax's
    )


def run(payloads: list[bytes], store: Path, forgotten: ForgottenIds | None = None) -> dict[type, list]:
    out: list = []
    flow = build_flow(TestingSource(records(payloads)), TestingSink(out), settings(store, forgotten))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(store))
    return by_type(out)


def new_store(path: Path) -> Path:
    path.mkdir(parents=True)
    init_db_dir(path, 1)
    return path


def live_snapshots(store: Path) -> list[tuple[str, str, object]]:
    """(step, key, state) of every key holding state in the newest snapshots (shards unfolded)."""
    return [(live.step_id, live.key, live.state) for live in live_states(store)]


def test_a_deletion_request_erases_the_user_and_every_device_linked_to_them(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery")
    before = run(history(), store)
    assert {r.person_id for r in before[ConversionRow]} == {"u:ann5c", "u:bob"}
    assert any(step.endswith("identity.device") and "lap5c" in key for step, key, _ in live_snapshots(store))

    out = run(history() + after_erasure(), store)  # resumes after the history: the state holds Ann until the request
    erased = {(f.tenant_id, f.person_key) for f in out[ForgetPerson]}
    assert erased == {("t1", "u:ann5c"), ("t1", "a:lap5c"), ("t1", "d:ph5c")}
    salt = PiiHasher.unkeyed().tenant_salt("t1")
    assert all(f.id_hash == ForgottenIds(lambda _: salt).hash_of("t1", f.person_key) for f in out[ForgetPerson])
    assert "ann5c" not in repr([(f.tenant_id, f.id_hash) for f in out[ForgetPerson]])  # what is stored is a hash

    # Her later events, on any device, are counted as suppressed and never credited; Bob goes on.
    forgotten = [s for s in out[SuppressedEvent] if s.reason == "forgotten"]
    assert len(forgotten) == 3
    assert {r.person_id for r in out[ConversionRow]} == {"u:bob"}
    assert {r.conversion_id for r in out[CreditRow]} == {"o4"}

    # No key of Ann holds state in any stateful step, and no live snapshot mentions her ids.
    live = live_snapshots(store)
    assert [key for _, key, _ in live if any(key.endswith(":" + i) for i in ANN_IDS)] == []
    for step, key, snapshot in live:
        state = repr(snapshot)
        assert not any(f"'{i}'" in state or f":{i}'" in state for i in ANN_IDS), (step, key, state)
    assert any("bob" in key for _, key, _ in live)

    # Offline, the store loses the names of her emptied keys too, and no page of it keeps her bytes.
    erased_list = ForgottenIds(PiiHasher.unkeyed().tenant_salt, [(f.tenant_id, f.id_hash) for f in out[ForgetPerson]])
    report = forget_in_recovery_store(store, erased_list)
    assert report.keys_removed >= 4 and report.keys_holding_state == 0  # her user key in 2+ steps, 2 devices
    files = list(store.rglob("*.sqlite3*"))
    assert any("shards" in str(f) for f in files)
    for part in files:
        data = part.read_bytes()
        assert not any(i.encode() in data for i in ANN_IDS), part
    resumed = run(history() + after_erasure() + [conversion("o6", T0 + 7 * HOUR, user_id="bob")], store)
    assert {r.person_id for r in resumed[ConversionRow]} == {"u:bob"}  # the store still resumes


def test_a_replay_or_backfill_with_the_suppression_list_never_brings_the_person_back(tmp_path: Path) -> None:
    store = new_store(tmp_path / "first")
    first = run(history() + after_erasure(), store)
    listed = [(f.tenant_id, f.id_hash) for f in first[ForgetPerson]]

    # A backfill of the same events, from scratch, by a run that loaded the durable list.
    forgotten = ForgottenIds(PiiHasher.unkeyed().tenant_salt, listed)
    replay = run(history() + after_erasure(), new_store(tmp_path / "backfill"), forgotten)
    assert {r.person_id for r in replay[ConversionRow]} == {"u:bob"}
    assert all(r.person_id == "u:bob" for r in replay[CreditRow])
    refused = [s for s in replay[SuppressedEvent] if s.reason == "forgotten"]
    assert len(refused) == 7  # every event naming her or her devices, the deletion request aside
    assert [f.person_key for f in replay[ForgetPerson]] == ["u:ann5c"]  # applied again: sinks delete anything new


def test_a_device_linked_to_someone_else_since_is_not_erased(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery")
    out = run(
        [
            ev("l1", "t1", "identify", T0, anonymous_id="shared", user_id="ann5c"),
            ev("l2", "t1", "identify", T0 + HOUR, anonymous_id="shared", user_id="cy"),  # Cy logs in after Ann
            ev("c-ad", "t1", "click", T0 + 2 * HOUR, anonymous_id="shared", channel="display"),
            ev("del", "t1", "deletion_request", T0 + 3 * HOUR, user_id="ann5c"),
            conversion("o9", T0 + 4 * HOUR, user_id="cy"),
        ],
        store,
    )
    assert {f.person_key for f in out[ForgetPerson]} == {"u:ann5c"}
    (row,) = [r for r in out[CreditRow] if r.model == "last_touch" and r.credit > 0]
    assert (row.person_id, row.touch_event_id) == ("u:cy", "c-ad")


def test_a_request_naming_only_a_device_erases_it_and_the_user_it_belongs_to(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery")
    out = run(
        [
            ev("ad", "t1", "click", T0, device_id="tv", anonymous_id="tv-a", channel="display"),
            ev("login", "t1", "identify", T0 + HOUR, device_id="tv", user_id="dee"),
            ev("del", "t1", "deletion_request", T0 + 2 * HOUR, device_id="tv", anonymous_id="tv-a"),
            conversion("o5", T0 + 3 * HOUR, user_id="dee"),
        ],
        store,
    )
    assert {f.person_key for f in out[ForgetPerson]} == {"d:tv", "a:tv-a", "u:dee"}
    assert out[ConversionRow] == []
    assert [s.reason for s in out[SuppressedEvent]] == ["forgotten"]
