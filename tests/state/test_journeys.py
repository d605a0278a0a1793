"""Journey state: ordering, eligibility, consumption, de-duplication and bounds."""

from __future__ import annotations

import pytest

from creditflow.config import DAY_MS, TenantConfig, TenantConfigs
from creditflow.events import (
    EMPTY_UTM,
    UNATTRIBUTED_CHANNEL,
    Conversion,
    ConversionRow,
    CreditRow,
    DeadLetter,
    Event,
    PersonEvent,
    SourcePosition,
    Utm,
)
from creditflow.kpis import KpiDelta
from creditflow.weights import NoWeights, StaticWeights
from state.journeys import JourneyLogic, JourneyState, ScoredConversion

T0 = 1_767_225_600_000
POS = SourcePosition("test", "p0", "0")


def touch(
    eid: str, day: float, channel: str, etype: str = "click", campaign: str = "", utm: Utm = EMPTY_UTM
) -> PersonEvent:
    ev = Event(
        eid, "t1", etype, T0 + int(day * DAY_MS), POS, user_id="u1", channel=channel, campaign_id=campaign, utm=utm
    )
    return PersonEvent("u:u1", ev)


def conversion(eid: str, day: float, cid: str, value: float = 100.0) -> PersonEvent:
    ev = Event(
        eid, "t1", "conversion", T0 + int(day * DAY_MS), POS, user_id="u1", conversion=Conversion(cid, value, "EUR")
    )
    return PersonEvent("u:u1", ev)


def logic(cfg: TenantConfig | None = None, weights=None) -> JourneyLogic:
    return JourneyLogic(TenantConfigs(defaults=cfg or TenantConfig()), weights or NoWeights(), None, now=lambda: 1000.0)


def feed(lg: JourneyLogic, *items: PersonEvent) -> list:
    """Rows the journey emitted (a scored conversion flattened into its rows)."""
    out: list = []
    for it in items:
        emitted, discard = lg.on_item(it)
        assert discard is False
        for e in emitted:
            out.extend(e.rows() if isinstance(e, ScoredConversion) else [e])
    return out


def credit_of(out: list, model: str) -> dict[str, tuple[float, float]]:
    return {
        r.touch_event_id: (r.credit, r.revenue_credit) for r in out if isinstance(r, CreditRow) and r.model == model
    }


def test_three_touches_every_model_matches_hand_computed_values() -> None:
    lg = logic()
    out = feed(
        lg,
        touch("a", 0, "email"),
        touch("b", 7, "paid_search"),
        touch("c", 14, "display"),
        conversion("v", 14, "o1", 100.0),
    )
    approx = pytest.approx
    assert credit_of(out, "first_touch") == {"a": (1.0, 100.0), "b": (0.0, 0.0), "c": (0.0, 0.0)}
    assert credit_of(out, "last_touch") == {"a": (0.0, 0.0), "b": (0.0, 0.0), "c": (1.0, 100.0)}
    lin = credit_of(out, "linear")
    assert {k: v[0] for k, v in lin.items()} == approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    td = credit_of(out, "time_decay")
    assert {k: v[0] for k, v in td.items()} == approx({"a": 1 / 7, "b": 2 / 7, "c": 4 / 7})
    assert {k: v[1] for k, v in td.items()} == approx({"a": 100 / 7, "b": 200 / 7, "c": 400 / 7})
    pb = credit_of(out, "position_based")
    assert {k: v[0] for k, v in pb.items()} == approx({"a": 0.4, "b": 0.2, "c": 0.4})
    dd = [r for r in out if isinstance(r, CreditRow) and r.model == "data_driven"]
    assert {r.model_version for r in dd} == {0}
    assert {r.touch_event_id: r.credit for r in dd} == approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    (conv,) = [r for r in out if isinstance(r, ConversionRow)]
    assert (conv.touch_count, conv.attributed, conv.first_touch_channel, conv.last_touch_channel) == (
        3,
        True,
        "email",
        "display",
    )


def test_out_of_order_touch_is_inserted_in_event_time_order() -> None:
    lg = logic()
    out = feed(lg, touch("late", 5, "display"), touch("early", 1, "email"), conversion("v", 6, "o1"))
    assert credit_of(out, "first_touch")["early"][0] == 1.0
    assert credit_of(out, "last_touch")["late"][0] == 1.0


def test_touches_are_consumed_and_a_later_conversion_credits_only_later_touches() -> None:
    lg = logic()
    feed(lg, touch("a", 0, "email"), conversion("v1", 1, "o1"))
    out = feed(lg, touch("b", 2, "display"), conversion("v2", 3, "o2"))
    assert set(credit_of(out, "linear")) == {"b"}


def test_a_touch_arriving_after_the_conversion_that_covered_its_time_is_not_credited_later() -> None:
    lg = logic()
    feed(lg, touch("a", 0, "email"), conversion("v1", 2, "o1"))
    out = feed(lg, touch("late", 1, "display"), touch("b", 3, "video"), conversion("v2", 4, "o2"))
    assert set(credit_of(out, "linear")) == {"b"}


def test_same_conversion_id_is_not_credited_twice() -> None:
    lg = logic()
    first = feed(lg, touch("a", 0, "email"), conversion("v1", 1, "o1"))
    again = feed(lg, touch("b", 1.5, "email"), conversion("v1-retry", 2, "o1"))
    assert any(isinstance(r, CreditRow) for r in first)
    (dup,) = [r for r in again if isinstance(r, DeadLetter)]
    assert isinstance(dup, DeadLetter) and dup.reason == "duplicate_conversion" and dup.event_id == "v1-retry"
    assert [t[4] for t in lg.state.touches] == ["b"]  # the retry consumed nothing


def test_conversion_without_eligible_touch_is_recorded_unattributed() -> None:
    lg = logic()
    out = feed(lg, conversion("v", 0, "o1", 42.0))
    rows = [r for r in out if isinstance(r, CreditRow)]
    assert {r.model for r in rows} == set(TenantConfig().models)
    assert all(r.channel == UNATTRIBUTED_CHANNEL and r.credit == 1.0 and r.revenue_credit == 42.0 for r in rows)
    (conv,) = [r for r in out if isinstance(r, ConversionRow)]
    assert conv.attributed is False and conv.touch_count == 0


def test_lookback_excludes_old_clicks_and_impressions_need_view_through() -> None:
    out = feed(logic(), touch("old", 0, "email"), touch("imp", 30.5, "display", "impression"), conversion("v", 31, "o"))
    # click older than 30 days; impression without view-through: nothing eligible, so unattributed
    assert credit_of(out, "linear") == {"": (1.0, 100.0)}
    vt = TenantConfig(view_through=True)
    out = feed(
        logic(vt),
        touch("imp-old", 0, "display", "impression"),
        touch("imp", 30.5, "display", "impression"),
        conversion("v", 31, "o"),
    )
    assert set(credit_of(out, "linear")) == {"imp"}  # impressions count for 1 day only


def test_touch_cap_keeps_the_newest() -> None:
    lg = logic(TenantConfig(max_touches=3))
    feed(lg, *(touch(f"t{i}", i * 0.1, "email") for i in range(10)))
    assert [t[4] for t in lg.state.touches] == ["t7", "t8", "t9"]


def test_event_time_idle_ttl_resets_state() -> None:
    lg = logic(TenantConfig(idle_ttl_days=2))
    feed(lg, touch("a", 0, "email"), touch("b", 5, "display"))
    assert [t[4] for t in lg.state.touches] == ["b"]


def test_wall_time_idle_ttl_discards_state() -> None:
    lg = logic(TenantConfig(idle_ttl_days=1))
    feed(lg, touch("a", 0, "email"))
    assert lg.notify_at().timestamp() == pytest.approx(1000.0 + 86_400)
    assert lg.on_notify() == ((), True)


def test_duplicate_touch_delivery_is_kept_once_counted_once_and_dead_lettered() -> None:
    lg = logic()
    out = feed(lg, touch("a", 0, "email"), touch("a", 0, "email"))
    assert len(lg.state.touches) == 1
    assert [d.clicks for d in out if isinstance(d, KpiDelta)] == [1]
    (dup,) = [d for d in out if isinstance(d, DeadLetter)]
    assert dup.reason == "duplicate_event" and dup.event_id == "a"


def test_touch_ids_remembered_are_bounded() -> None:
    from state.journeys import RECENT_TOUCH_IDS

    lg = logic()
    feed(lg, *(touch(f"t{i}", i * 0.01, "email") for i in range(RECENT_TOUCH_IDS + 5)))
    assert len(lg.state.recent_touch_ids) == RECENT_TOUCH_IDS * 8
    # a copy of the newest is still caught; a copy of one older than the window is counted again
    assert [d for d in feed(lg, touch(f"t{RECENT_TOUCH_IDS + 4}", 1, "email")) if isinstance(d, DeadLetter)]
    assert not [d for d in feed(lg, touch("t0", 1, "email")) if isinstance(d, DeadLetter)]


def test_first_and_last_utm_are_exposed_on_conversions() -> None:
    lg = logic()
    out = feed(
        lg,
        touch("a", 0, "email", utm=Utm(source="newsletter", medium="email")),
        touch("b", 1, "paid_search", utm=Utm(source="google", medium="cpc")),
        conversion("v", 2, "o"),
    )
    (conv,) = [r for r in out if isinstance(r, ConversionRow)]
    assert conv.first_utm.source == "newsletter" and conv.last_utm.source == "google"


def test_data_driven_uses_published_weights_and_their_version() -> None:
    lg = logic(weights=StaticWeights({"t1": (4, {"email": 3.0, "display": 1.0})}))
    out = feed(lg, touch("a", 0, "email"), touch("b", 1, "display"), conversion("v", 2, "o"))
    dd = [r for r in out if isinstance(r, CreditRow) and r.model == "data_driven"]
    assert {r.model_version for r in dd} == {4}
    assert {r.touch_event_id: r.credit for r in dd} == pytest.approx({"a": 0.75, "b": 0.25})


def test_kpi_deltas_follow_the_tenant_kpi_model() -> None:
    lg = logic(TenantConfig(kpi_model="linear"))
    out = feed(lg, touch("a", 0, "email"), touch("b", 1, "display"), conversion("v", 2, "o", 10.0))
    deltas = [r for r in out if isinstance(r, KpiDelta) and r.conversions]
    assert sorted((d.channel, d.conversions, d.revenue) for d in deltas) == [("display", 0.5, 5.0), ("email", 0.5, 5.0)]


def test_snapshot_is_a_copy() -> None:
    lg = logic()
    feed(lg, touch("a", 0, "email"))
    snap = lg.snapshot()
    feed(lg, touch("b", 1, "email"))
    assert isinstance(snap, JourneyState) and len(snap.touches) == 1
