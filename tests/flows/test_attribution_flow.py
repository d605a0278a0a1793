"""The whole attribution dataflow with bytewax.testing: one and two workers, abort and resume."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from creditflow.config import DAY_MS, TenantConfig, TenantConfigs
from creditflow.events import ConversionRow, CreditRow, DeadLetter, KpiRow, RawRecord, SourcePosition
from flows.attribution import FlowSettings, build_flow
from state.kpi_windows import WindowSettings

T0 = 1_767_225_600_000


def ev(eid: str, tenant: str, etype: str, ts: int, **fields: object) -> bytes:
    return orjson.dumps({"event_id": eid, "tenant_id": tenant, "event_type": etype, "timestamp": ts, **fields})


def journeys(tenant: str = "t1") -> list[bytes]:
    """Two persons; u1 converts after three clicks, u2 after one; plus ad spend and bad records."""
    return [
        ev(
            "a",
            tenant,
            "click",
            T0,
            user_id="u1",
            utm={"source": "newsletter", "medium": "email", "campaign": "spring"},
        ),
        ev(
            "s1",
            tenant,
            "ad_spend",
            T0 + 1000,
            channel="paid_search",
            campaign_id="brand",
            metrics={"impressions": 100, "clicks": 10, "cost": 25.0},
        ),
        ev("b", tenant, "click", T0 + 7 * DAY_MS, user_id="u1", click_ids={"gclid": "g1"}, campaign_id="brand"),
        ev("x", tenant, "click", T0 + 7 * DAY_MS + 10, anonymous_id="anon2", channel="display", campaign_id="banner"),
        ev("c", tenant, "click", T0 + 14 * DAY_MS, user_id="u1", channel="display", campaign_id="banner"),
        ev(
            "v1",
            tenant,
            "conversion",
            T0 + 14 * DAY_MS + 5,
            user_id="u1",
            conversion={"conversion_id": "o1", "value": 140.0, "currency": "EUR"},
        ),
        ev(
            "v2",
            tenant,
            "conversion",
            T0 + 14 * DAY_MS + 9,
            anonymous_id="anon2",
            conversion={"conversion_id": "o2", "value": 10.0, "currency": "EUR"},
        ),
        b'{"event_id": "broken", ',
        ev("bad-ts", tenant, "click", 1234, user_id="u9"),
    ]


def records(payloads: list[bytes], part: str = "p0") -> list[RawRecord]:
    return [RawRecord(p, SourcePosition("test", part, str(i))) for i, p in enumerate(payloads)]


def settings() -> FlowSettings:
    return FlowSettings(
        configs=TenantConfigs(defaults=TenantConfig(half_life_days=7)),
        # Days of event time replay in milliseconds here: windows close at end of input, not by lateness
        # (lateness itself is tested in tests/state/test_kpi_windows.py and by the kill harness).
        windows=WindowSettings(length_ms=5000, allowed_lateness_ms=60 * DAY_MS),
    )


def by_type(out: list) -> dict[type, list]:
    grouped: dict[type, list] = defaultdict(list)
    for row in out:
        grouped[type(row)].append(row)
    return grouped


def credit_table(rows: list[CreditRow]) -> dict[tuple[str, str, str], float]:
    return {(r.conversion_id, r.model, r.touch_event_id): round(r.credit, 9) for r in rows}


def test_one_worker_credits_kpis_and_dead_letters() -> None:
    out: list = []
    run_main(build_flow(TestingSource(records(journeys())), TestingSink(out), settings()))
    got = by_type(out)
    table = credit_table(got[CreditRow])
    assert table[("o1", "first_touch", "a")] == 1.0
    assert table[("o1", "last_touch", "c")] == 1.0
    assert table[("o1", "time_decay", "a")] == round(1 / 7, 9)  # ages ~14 d, 7 d, 0 d
    assert table[("o1", "position_based", "b")] == round(0.2, 9)
    assert table[("o2", "linear", "x")] == 1.0
    for conv in ("o1", "o2"):
        for model in TenantConfig().models:
            assert sum(
                r.credit for r in got[CreditRow] if (r.conversion_id, r.model) == (conv, model)
            ) == pytest.approx(1)
    assert {(c.conversion_id, c.touch_count) for c in got[ConversionRow]} == {("o1", 3), ("o2", 1)}
    o1 = next(c for c in got[ConversionRow] if c.conversion_id == "o1")
    assert o1.first_utm.source == "newsletter"
    assert sorted(d.reason for d in got[DeadLetter]) == ["invalid_timestamp", "parse_error"]
    kpi = got[KpiRow]
    assert sum(r.clicks for r in kpi) == 4 + 10 * 0  # tracked clicks; ad spend volume not counted by default
    assert sum(r.cost for r in kpi) == 25.0
    assert sum(r.conversions for r in kpi) == pytest.approx(2.0)  # last-touch credited conversions
    assert sum(r.revenue for r in kpi) == pytest.approx(150.0)
    by_channel = {r.channel for r in kpi if r.conversions}
    assert by_channel == {"display"}


def test_two_workers_give_the_same_result_as_one() -> None:
    one: list = []
    run_main(build_flow(TestingSource(records(journeys("t1") + journeys("t2"))), TestingSink(one), settings()))
    two: list = []
    cluster_main(
        build_flow(TestingSource(records(journeys("t1") + journeys("t2"))), TestingSink(two), settings()),
        addresses=[],
        proc_id=0,
        worker_count_per_proc=2,
    )
    assert credit_table(by_type(one)[CreditRow]) == credit_table(by_type(two)[CreditRow])
    assert len(credit_table(by_type(one)[CreditRow])) > 0

    def kpi_totals(out: list) -> tuple:
        rows = by_type(out)[KpiRow]
        return (
            sum(r.clicks for r in rows),
            round(sum(r.cost for r in rows), 6),
            round(sum(r.revenue for r in rows), 6),
        )

    assert kpi_totals(one) == kpi_totals(two)


def test_tenants_never_share_state() -> None:
    out: list = []
    run_main(build_flow(TestingSource(records(journeys("t1") + journeys("t2"))), TestingSink(out), settings()))
    credit_rows = by_type(out)[CreditRow]
    for tenant in ("t1", "t2"):
        mine = [r for r in credit_rows if r.tenant_id == tenant and r.model == "linear" and r.conversion_id == "o1"]
        assert sum(r.credit for r in mine) == pytest.approx(1.0)
        assert len(mine) == 3


def test_abort_and_resume_credits_every_conversion(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(tmp_path)
    payloads = journeys()
    items: list = [*records(payloads[:4]), TestingSource.ABORT(), *records(payloads[4:])]
    first: list = []
    run_main(
        build_flow(TestingSource(items), TestingSink(first), settings()),
        epoch_interval=timedelta(0),
        recovery_config=recovery,
    )
    assert not by_type(first)[CreditRow], "the abort comes before any conversion"
    second: list = []
    run_main(
        build_flow(TestingSource(items), TestingSink(second), settings()),
        epoch_interval=timedelta(0),
        recovery_config=recovery,
    )
    table = credit_table(by_type(first + second)[CreditRow])
    # u1's first two clicks were only in the journey state snapshotted before the abort.
    assert table[("o1", "first_touch", "a")] == 1.0
    assert table[("o1", "linear", "b")] == round(1 / 3, 9)


def test_fast_replay_with_zero_lateness_loses_no_conversion_from_kpis() -> None:
    """Conversion deltas take a longer path than touches; within an epoch they must not count as late."""
    from sources.generator import generate_events

    events = list(generate_events(seed=5, n_persons=400, tenants=("acme",)))
    out: list = []
    run_main(
        build_flow(
            TestingSource(records([orjson.dumps(e) for e in events]), batch_size=500), TestingSink(out), settings()
        ),
        epoch_interval=timedelta(seconds=10),
    )
    got = by_type(out)
    assert not [d for d in got[DeadLetter] if d.reason == "late_event"]
    windows = {(r.tenant_id, r.window_start_ms, r.channel, r.campaign_id) for r in got[KpiRow]}
    assert len(windows) == len(got[KpiRow]), "no window closed before its conversions (no restatement)"
    conversions = {e["conversion"]["conversion_id"] for e in events if e["event_type"] == "conversion"}
    assert {r.conversion_id for r in got[ConversionRow]} == conversions  # some restated at a login: several rows
    assert sum(r.conversions for r in got[KpiRow]) == pytest.approx(len(conversions))


def test_same_conversion_from_two_persons_is_credited_once_and_the_copy_dead_lettered() -> None:
    purchase = {"conversion_id": "o9", "value": 30.0}
    payloads = [
        ev("t-a", "t1", "click", T0, anonymous_id="anon", channel="email"),
        ev("t-b", "t1", "click", T0 + 1000, user_id="u5", channel="display"),
        ev("c-anon", "t1", "conversion", T0 + 2000, anonymous_id="anon", conversion=purchase),
        ev("c-user", "t1", "conversion", T0 + 2500, user_id="u5", conversion=purchase),
        ev("c-other-tenant", "t2", "conversion", T0 + 2500, user_id="u5", conversion=purchase),
    ]
    out: list = []
    run_main(build_flow(TestingSource(records(payloads)), TestingSink(out), settings()))
    got = by_type(out)
    linear = [r for r in got[CreditRow] if r.model == "linear"]
    assert sorted((r.tenant_id, r.conversion_id, r.touch_event_id) for r in linear) == [
        ("t1", "o9", "t-a"),
        ("t2", "o9", ""),
    ]
    (dup,) = [d for d in got[DeadLetter] if d.reason == "duplicate_conversion"]
    assert dup.event_id == "c-user" and "already credited" in dup.detail


def test_an_ad_spend_report_delivered_twice_costs_once() -> None:
    spend = ev(
        "s9",
        "t1",
        "ad_spend",
        T0,
        channel="display",
        campaign_id="c",
        metrics={"impressions": 9, "clicks": 1, "cost": 4.0},
    )
    out: list = []
    run_main(build_flow(TestingSource(records([spend, spend])), TestingSink(out), settings()))
    got = by_type(out)
    assert sum(r.cost for r in got[KpiRow]) == 4.0
    assert [(d.reason, d.position.offset) for d in got[DeadLetter]] == [("duplicate_event", "1")]


def test_tenants_with_the_same_ids_share_no_kpi_rows() -> None:
    out: list = []
    run_main(build_flow(TestingSource(records(journeys("t1") + journeys("t2"))), TestingSink(out), settings()))
    kpis = by_type(out)[KpiRow]

    def totals(tenant: str) -> dict:
        mine = [r for r in kpis if r.tenant_id == tenant]
        return {(r.window_start_ms, r.channel, r.campaign_id): (r.clicks, r.cost, round(r.revenue, 9)) for r in mine}

    assert totals("t1") == totals("t2") != {}  # same data per tenant, counted apart (not doubled, not merged)
    assert {c.tenant_id for c in by_type(out)[ConversionRow]} == {"t1", "t2"}
