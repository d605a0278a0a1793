"""Journey state: ordering, eligibility, consumption, de-duplication and bounds."""

from __future__ import annotations

import hashlib
import pickle
import random
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import state.journey_state
from creditflow.config import DAY_MS, TenantConfig, TenantConfigs
from creditflow.events import (
    EMPTY_UTM,
    UNATTRIBUTED_CHANNEL,
    ClosedJourney,
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
from operators.state_guard import StateLayoutError, guarded_builder
from state.journey_state import JOURNEY_LAYOUT_AT, Journey, pack_id, split_ids, unpack_id
from state.journeys import (
    MAX_OPEN_CONVERSIONS,
    MAX_SEEN_CONVERSIONS,
    RECENT_TOUCH_IDS,
    STATE_LAYOUT_VERSION,
    ExpiredJourney,
    JourneyEnv,
    JourneyLogic,
    JourneyState,
    OpenConversion,
    ScoredConversion,
    credit_rows,
    is_touchpoint,
)

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


def logic(cfg: TenantConfig | None = None, weights=None, archive: bool = False) -> JourneyLogic:
    env = JourneyEnv(
        TenantConfigs(defaults=cfg or TenantConfig()), weights or NoWeights(), now=lambda: 1000.0, archive=archive
    )
    return JourneyLogic(env, None)


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


def test_a_late_touch_restates_the_conversion_it_precedes_and_not_the_next_one() -> None:
    lg = logic()
    first = feed(lg, touch("a", 0, "email"), conversion("v1", 2, "o1"))
    out = feed(lg, touch("late", 1, "display"), touch("b", 3, "video"), conversion("v2", 4, "o2"))
    o1 = [r for r in out if isinstance(r, CreditRow) and r.conversion_id == "o1"]
    assert set(credit_of(o1, "linear")) == {"a", "late"}
    assert {r.revision for r in first if isinstance(r, CreditRow)} == {1}
    assert {r.revision for r in o1} == {2}  # one more event in its window
    o2 = [r for r in out if isinstance(r, CreditRow) and r.conversion_id == "o2"]
    assert set(credit_of(o2, "linear")) == {"b"}


def test_a_conversion_arriving_out_of_order_takes_the_earlier_touches_from_the_later_one() -> None:
    lg = logic()
    first = feed(lg, touch("a", 0, "email"), touch("b", 2, "display"), conversion("v2", 3, "o2"))
    assert set(credit_of(first, "linear")) == {"a", "b"}
    out = feed(lg, conversion("v1", 1, "o1"))
    (o1,) = [r for r in out if isinstance(r, ConversionRow) and r.conversion_id == "o1"]
    (o2,) = [r for r in out if isinstance(r, ConversionRow) and r.conversion_id == "o2"]
    assert (o1.touch_count, o1.revision) == (1, 1)  # a; its window holds a
    assert (o2.touch_count, o2.revision) == (1, 3)  # b only now; its window holds a, b and o1
    o2_rows = [r for r in out if isinstance(r, CreditRow) and r.conversion_id == "o2"]
    assert set(credit_of(o2_rows, "linear")) == {"b"}


def test_restated_kpi_deltas_move_credit_between_rows_and_raise_their_revision() -> None:
    lg = logic(TenantConfig(kpi_model="linear"))
    first = [e for e in lg.on_item(conversion("v", 2, "o1", 50.0))[0] if isinstance(e, ScoredConversion)]
    later = [e for e in lg.on_item(touch("a", 1, "email", campaign="c1"))[0] if isinstance(e, ScoredConversion)]
    at = T0 + 2 * DAY_MS
    assert [(d.channel, d.conversions, d.revenue, d.events) for d in first[0].kpi_deltas] == [
        (UNATTRIBUTED_CHANNEL, 1.0, 50.0, 1)
    ]
    assert [(d.channel, d.campaign_id, d.ts_ms, d.conversions, d.revenue, d.events) for d in later[0].kpi_deltas] == [
        ("email", "c1", at, 1.0, 50.0, 2),  # first reached: credit and revision + 1
        (UNATTRIBUTED_CHANNEL, "", at, -1.0, -50.0, 1),  # reached before: the changes
    ]


def test_events_outside_a_conversions_window_do_not_restate_it() -> None:
    lg = logic()
    feed(lg, touch("a", 0, "email"), conversion("v1", 2, "o1"))
    out = feed(lg, touch("b", 3, "video"), touch("c", 2.5, "display"))
    assert not [r for r in out if isinstance(r, CreditRow)]


def test_a_conversion_older_than_the_lookback_before_the_newest_event_is_no_longer_restated() -> None:
    lg = logic()
    feed(lg, conversion("v1", 2, "o1"), touch("b", 40, "video"))
    assert lg.state.open_conversions == []
    out = feed(lg, touch("late", 1, "display"))
    assert not [r for r in out if isinstance(r, CreditRow)]
    assert lg.state.touches == [(T0 + 40 * DAY_MS, "click", "video", "", "b")]  # too old to keep


def test_open_conversions_are_capped_at_the_newest() -> None:
    lg = logic()
    feed(lg, *(conversion(f"v{i}", i / 10, f"o{i}") for i in range(MAX_OPEN_CONVERSIONS + 3)))
    opens = lg.state.open_conversions
    assert [o.conversion_id for o in opens] == [f"o{i}" for i in range(3, MAX_OPEN_CONVERSIONS + 3)]
    out = feed(lg, touch("late", 0.05, "email"))  # in the windows of o1.. only: o1 and o2 are closed
    assert {r.conversion_id for r in out if isinstance(r, ConversionRow)} == {o.conversion_id for o in opens}


def test_same_conversion_id_is_not_credited_twice() -> None:
    lg = logic()
    first = feed(lg, touch("a", 0, "email"), conversion("v1", 1, "o1"))
    again = feed(lg, touch("b", 1.5, "email"), conversion("v1-retry", 2, "o1"))
    assert any(isinstance(r, CreditRow) for r in first)
    (dup,) = [r for r in again if isinstance(r, DeadLetter)]
    assert isinstance(dup, DeadLetter) and dup.reason == "duplicate_conversion" and dup.event_id == "v1-retry"
    assert not [r for r in again if isinstance(r, CreditRow)]  # the retry earned nothing
    assert [t[4] for t in lg.state.touches] == ["a", "b"]  # touches stay for the lookback


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


def test_archive_gets_the_credited_path_of_each_conversion() -> None:
    lg = logic(archive=True)
    out = feed(lg, touch("a", 0, "email"), touch("b", 1, "search"), conversion("v", 2, "o1", 40.0))
    (closed,) = [r for r in out if isinstance(r, ClosedJourney)]
    assert closed == ClosedJourney(
        "t1", "u:u1", "converted:o1", "converted", T0 + 2 * DAY_MS, "o1", 40.0,
        ("email", "search"), (T0, T0 + DAY_MS), revision=2,
    )  # fmt: skip
    # consumed: the next conversion's path starts after it (no eligible touch: an empty path)
    out = feed(lg, conversion("w", 3, "o2"))
    assert [r.touch_channels for r in out if isinstance(r, ClosedJourney)] == [()]


def test_archive_gets_the_unconverted_rest_when_the_person_goes_idle() -> None:
    lg = logic(TenantConfig(idle_ttl_days=2), archive=True)
    feed(lg, touch("a", 0, "email"), conversion("v", 0.5, "o1"), touch("b", 1, "display"))
    out, discard = lg.on_notify()
    assert discard is True
    assert list(out) == [ExpiredJourney(T0 + DAY_MS, ("display",), (T0 + DAY_MS,))]
    assert list(out)[0].closed("t1", "u:u1").journey_id == "u:u1:expired:" + str(T0 + DAY_MS)
    # ... and when an event comes back after more than the idle TTL of event time
    lg = logic(TenantConfig(idle_ttl_days=2), archive=True)
    out = feed(lg, touch("a", 0, "email"), touch("b", 5, "search"))
    (closed,) = [r for r in out if isinstance(r, ClosedJourney)]
    assert (closed.outcome, closed.touch_channels, closed.closed_at_ms) == ("expired", ("email",), T0)


def test_an_idle_journey_is_archived_unconverted_for_training_and_kept_until_the_idle_ttl() -> None:
    clock = [1000.0]
    env = JourneyEnv(
        TenantConfigs(defaults=TenantConfig(idle_ttl_days=30, training_close_days=7)), NoWeights(),
        now=lambda: clock[0], archive=True,
    )  # fmt: skip
    lg = JourneyLogic(env, None)
    lg.on_item(touch("a", 0, "email"))
    assert lg.notify_at().timestamp() == pytest.approx(1000.0 + 7 * 86_400)  # the training close first
    clock[0] += 7 * 86_400
    out, discard = lg.on_notify()
    assert discard is False and [o.outcome for o in out] == ["unconverted"]
    assert list(out)[0].closed("t1", "u:u1").journey_id == f"u:u1:unconverted:{T0}"
    assert lg.notify_at().timestamp() == pytest.approx(1000.0 + 30 * 86_400)  # then the idle TTL
    clock[0] = 1000.0 + 30 * 86_400
    out, discard = lg.on_notify()
    assert discard is True and [o.outcome for o in out] == ["expired"]  # same path: the retrain keeps one


def test_without_the_archive_there_is_no_training_close() -> None:
    lg = logic(TenantConfig(idle_ttl_days=30, training_close_days=7))
    lg.on_item(touch("a", 0, "email"))
    assert lg.notify_at().timestamp() == pytest.approx(1000.0 + 30 * 86_400)


def test_no_archive_rows_unless_asked() -> None:
    lg = logic(TenantConfig(idle_ttl_days=2))
    out = feed(lg, touch("a", 0, "email"), conversion("v", 0.5, "o1"), touch("b", 1, "x"), touch("c", 9, "y"))
    assert not [r for r in out if isinstance(r, ClosedJourney)]
    assert lg.on_notify() == ((), True)


def test_duplicate_touch_delivery_is_kept_once_counted_once_and_dead_lettered() -> None:
    lg = logic()
    out = feed(lg, touch("a", 0, "email"), touch("a", 0, "email"))
    assert len(lg.state.touches) == 1
    assert [d.clicks for d in out if isinstance(d, KpiDelta)] == [1]
    (dup,) = [d for d in out if isinstance(d, DeadLetter)]
    assert dup.reason == "duplicate_event" and dup.event_id == "a"


def test_touch_ids_remembered_are_bounded() -> None:
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
    assert type(snap) is tuple and len(JourneyState.of_row(snap).touches) == 1  # a row: plain values


# --------------------------------------------------------------------------- #
# Packed state (layout 3): ids, round trips, pickling, equivalence with the plain model
# --------------------------------------------------------------------------- #

UUID = "6f1c3e0a-2b4d-4e6f-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    "text",
    [
        UUID,
        UUID.upper(),  # not canonical: kept as text
        "6f1c3e0a-2b4d-4e6f-8a9b-0c1d2e3f4a5",  # 35 chars
        "6f1c3e0a-2b4d-4e6f-8a9b 0c1d2e3f4a5b",  # a blank where a dash belongs
        "6f1c3e0a-2b4d-4e6f-8a9b-0c1d2e3f 4a5",  # fromhex would skip the blank
        "6f1c3e0a-2b4d-4e6f-8a9b-0c1d2e3f4a5g",
        "",
        "a",
        "ord-1",
        "x" * 126,
        "x" * 127,  # the first length that takes two bytes
        "é" * 256,  # 512 UTF-8 bytes
        "\ud800lone surrogate",
        "emoji 🎯",
    ],
)
def test_packed_ids_round_trip_and_delimit_themselves(text: str) -> None:
    packed = pack_id(text)
    assert unpack_id(packed) == text
    assert len(packed) == (
        17 if text == UUID else len(text.encode("utf-8", "surrogatepass")) + (1 if len(packed) < 128 else 2)
    )
    assert split_ids(pack_id("a") + packed + pack_id(UUID)) == [pack_id("a"), packed, pack_id(UUID)]


@given(st.lists(st.text(max_size=300) | st.uuids().map(str), max_size=8))
def test_packed_ids_round_trip_property(texts: list[str]) -> None:
    joined = b"".join(pack_id(t) for t in texts)
    assert [unpack_id(p) for p in split_ids(joined)] == texts
    assert all((pack_id(a) == pack_id(b)) == (a == b) for a in texts for b in texts)


def test_an_id_too_long_to_pack_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        pack_id("x" * 40_000)


def _full_state() -> JourneyLogic:
    """A journey with touches (UUID and plain ids, ties), UTMs, conversions and digests."""
    lg = logic(TenantConfig(view_through=True))
    feed(
        lg,
        touch("a", 0, "email", utm=Utm(source="newsletter", medium="email")),
        touch(UUID, 1, "display", "impression", campaign="banner"),
        conversion("v", 1.5, "o1"),
        touch("b", 2, "paid_search", campaign="brand", utm=Utm("google", "cpc", "brand", "ad", "shoes")),
        touch("c", 2, "email"),  # same time as b
        touch("ünï", 3, "video", "page_view"),
        conversion("v2", 2.5, "o2"),
    )
    return lg


def test_state_unpacks_to_what_was_fed() -> None:
    st_ = _full_state().state
    assert [t[4] for t in st_.touches] == ["a", UUID, "c", "b", "ünï"]  # kept for the lookback, in Touch order
    assert st_.forgotten_until_ms == -1
    assert [(o.conversion_id, o.event_id, o.value) for o in st_.open_conversions] == [
        ("o1", "v", 100.0),
        ("o2", "v2", 100.0),
    ]
    assert st_.last_event_ms == T0 + 3 * DAY_MS
    assert st_.last_seen_wall_s == 1000.0
    assert st_.first_utm == (T0, Utm(source="newsletter", medium="email"))
    assert st_.last_utm == (T0 + 2 * DAY_MS, Utm("google", "cpc", "brand", "ad", "shoes"))
    assert st_.seen_conversions == [("o1", T0 + int(1.5 * DAY_MS)), ("o2", T0 + int(2.5 * DAY_MS))]
    assert len(st_.recent_touch_ids) == 5 * 8


def test_pack_unpack_round_trip() -> None:
    st_ = _full_state().state
    j = Journey.unpack(st_.packed, st_.refs)
    assert j.pack() == (st_.packed, st_.refs)
    assert Journey.unpack(b"", ()).pack() == Journey().pack()


def test_snapshot_pickles_values_and_loads_shared_again(monkeypatch: pytest.MonkeyPatch) -> None:
    row = _full_state().snapshot()
    snap = JourneyState.of_row(row)
    data = pickle.dumps(row)
    assert b"creditflow" not in data and b"state." not in data  # plain values, no class of ours
    # A fresh process has empty intern tables: the snapshot must not need them.
    monkeypatch.setattr(state.journey_state, "_metas", {})
    monkeypatch.setattr(state.journey_state, "_utms", {})
    loaded = JourneyState.of_row(pickle.loads(data))
    assert loaded == snap and loaded.layout == STATE_LAYOUT_VERSION
    assert loaded.touches == snap.touches and loaded.first_utm == snap.first_utm
    again = JourneyState.of_row(pickle.loads(data))
    assert again.refs[3] is loaded.refs[3]  # shared through the (new) intern table
    assert again.refs[1] is loaded.refs[1]
    assert pickle.loads(pickle.dumps(snap)) == snap  # a JourneyState itself (in an Adopt) pickles too


def test_a_resumed_journey_continues_exactly() -> None:
    lg = _full_state()
    resumed = JourneyLogic(lg._ctx.env, pickle.loads(pickle.dumps(lg.snapshot())))
    more = (touch("d", 4, "email"), conversion("v3", 5, "o3"), conversion("v3-retry", 5, "o1"))
    assert feed(resumed, *more) == feed(lg, *more)
    assert resumed.snapshot() == lg.snapshot()


@settings(max_examples=300)
@given(
    newest=st.integers(-(2**40), 2**45),
    backs=st.lists(st.integers(-(2**20), 2**34), max_size=6),
    forgotten=st.sampled_from([-1, 0, 123]) | st.integers(-(2**45), 2**45),
    utm_ts=st.tuples(st.none() | st.integers(-(2**45), 2**45), st.none() | st.integers(-(2**45), 2**45)),
    consent=st.sampled_from([0, 1, 2]),
    consent_ts=st.sampled_from([-1, 0]) | st.integers(-(2**45), 2**45),
)
def test_every_header_field_and_touch_time_round_trips(
    newest: int,
    backs: list[int],
    forgotten: int,
    utm_ts: tuple[int | None, int | None],
    consent: int,
    consent_ts: int,
) -> None:
    # Touch times near the newest event pack as 4-byte offsets, others (older than ~49 days, or
    # after the newest event) as 8 bytes; absent header fields are left out. Whatever the mix, the
    # journey unpacks exactly as it was.
    j = Journey()
    j.last_event_ms, j.forgotten_until_ms, j.last_seen_wall_s = newest, forgotten, 1_700_000_000.25
    j.ts = sorted(newest - back for back in backs)
    j.metas = [("click", "email", "")] * len(j.ts)
    j._ids = b"".join(pack_id(f"e{i}") for i in range(len(j.ts)))
    first, last = utm_ts
    j.first_utm = None if first is None else (first, Utm("a"))
    j.last_utm = None if last is None else (last, Utm("b"))
    j.consent, j.consent_ts_ms = consent, consent_ts
    packed, refs = j.pack()
    back = Journey.unpack(packed, refs)
    fields = ("last_event_ms", "forgotten_until_ms", "last_seen_wall_s", "first_utm", "last_utm", "ts", "metas")
    assert [getattr(back, f) for f in fields] == [getattr(j, f) for f in fields]
    assert (back.consent, back.consent_ts_ms, back.touches()) == (j.consent, j.consent_ts_ms, j.touches())
    assert back.pack() == (packed, refs)


def test_a_plain_journey_header_is_compact() -> None:
    # The common journey: no UTM, nothing forgotten, no consent decision, recent touches.
    j = Journey()
    j.last_event_ms, j.ts, j.metas, j._ids = T0, [T0 - DAY_MS, T0], [("click", "email", "")] * 2, b""
    packed, _ = j.pack()
    assert len(packed) == 22 + 2 * 4  # layout 5 took 53 + 2 * 8


# A layout-5 row (``JourneyLogic.snapshot`` of ``_full_state()``), pickled by that code (2dcdc6d).
LAYOUT_5_ROW = bytes.fromhex(
    "800595a0010000000000004b0543e300bc4d869b010000ffffffffffffffff0000000000408f4000a8da769b010000006027819b01000005"
    "02160000ffffffffffffffff00a8da769b0100000004017c9b010000006027819b010000006027819b01000000bc4d869b01000040f89e39"
    "5b66422f9935d0722ddcbe6b8472c2e34d854f75373f6364cd072c1b5861af09ba88cd970032947e9b010000008eba839b010000026f3102"
    "6f32026f310032947e9b01000000000000000059400176026f32008eba839b010000000000000000594002763201617f6f1c3e0a2b4d4e6f"
    "8a9b0c1d2e3f4a5b0163016205c3bc6ec3af9428288c0a6e6577736c6574746572948c05656d61696c948c0094680368037494288c06676f"
    "6f676c65948c03637063948c056272616e64948c026164948c0573686f65739474948c034555529468038694680c86948c05636c69636b94"
    "6802680387948c0a696d7072657373696f6e948c07646973706c6179948c0662616e6e6572948794680f680e8c0b706169645f7365617263"
    "6894680787948c09706167655f76696577948c05766964656f9468038794749487942e"
)


def test_a_layout_5_row_is_upgraded_and_resumes_exactly() -> None:
    old = pickle.loads(LAYOUT_5_ROW)
    assert old[0] == 5 and len(old[1]) == 227
    now = _full_state()
    assert JourneyState.of_row(old) == now.state  # upgraded: the same journey, in this layout's bytes
    assert len(now.snapshot()[1]) < 227 - 30
    build = guarded_builder(
        "journey", STATE_LAYOUT_VERSION, lambda resume: JourneyLogic(now._ctx.env, resume), JOURNEY_LAYOUT_AT, (5,)
    )
    resumed = build(old)
    more = (touch("d", 4, "email"), conversion("v3", 5, "o3"), conversion("v3-retry", 5, "o1"))
    assert feed(resumed, *more) == feed(now, *more)
    assert resumed.snapshot() == now.snapshot()


# A snapshot pickled by layout 2 (the dataclass of lists), captured from that code.
LAYOUT_2_SNAPSHOT = bytes.fromhex(
    "80049574010000000000008c0e73746174652e6a6f75726e657973948c0c4a6f75726e657953746174659493942981944e7d94288c07746f"
    "7563686573945d94288a0600a8da769b018c05636c69636b948c05656d61696c948c026331948c026531947494618c11636f6e73756d6564"
    "5f756e74696c5f6d73944affffffff8c0d6c6173745f6576656e745f6d73948a0600a8da769b018c106c6173745f7365656e5f77616c6c5f"
    "739447408f4000000000008c0966697273745f75746d948a0600a8da769b018c11637265646974666c6f772e6576656e7473948c0355746d"
    "9493942981945d94288c0a6e6577736c65747465729468088c009468166816656286948c086c6173745f75746d948a0600a8da769b016812"
    "2981945d942868156808681668166816656286948c107365656e5f636f6e76657273696f6e73945d948c026f31948a0600a8da769b018694"
    "618c10726563656e745f746f7563685f6964739443083132333435363738948c066c61796f7574944b02758694622e"
)


def test_a_layout_2_snapshot_is_refused_by_the_state_guard() -> None:

    old = pickle.loads(LAYOUT_2_SNAPSHOT)
    assert isinstance(old, JourneyState) and old.layout == 2
    build = guarded_builder("journey", STATE_LAYOUT_VERSION, lambda resume: resume, JOURNEY_LAYOUT_AT)
    with pytest.raises(
        StateLayoutError, match=f"snapshot has state layout 2, this code expects {STATE_LAYOUT_VERSION}"
    ):
        build(old)


def test_touches_are_pruned_exactly_at_the_lookback_horizon() -> None:
    lg = logic()
    feed(lg, touch("a", 0, "email"), touch("b", 1, "email"))
    feed(lg, PersonEvent("u:u1", Event("c", "t1", "click", T0 + 30 * DAY_MS, POS, user_id="u1", channel="email")))
    assert [t[4] for t in lg.state.touches] == ["a", "b", "c"]  # "a" is exactly 30 days old: kept
    feed(lg, PersonEvent("u:u1", Event("d", "t1", "click", T0 + 30 * DAY_MS + 1, POS, user_id="u1", channel="email")))
    assert [t[4] for t in lg.state.touches] == ["b", "c", "d"]
    lg = logic()
    feed(lg, touch("a", 0, "email"), touch("b", 1, "email"), touch("c", 31, "email"))
    assert [t[4] for t in lg.state.touches] == ["b", "c"]  # "b" is exactly 30 days old


def test_event_time_idle_ttl_is_exclusive() -> None:
    lg = logic(TenantConfig(idle_ttl_days=2))
    feed(lg, touch("a", 0, "email"), touch("b", 2, "email"))
    assert [t[4] for t in lg.state.touches] == ["a", "b"]  # exactly the TTL apart: the same journey
    feed(lg, PersonEvent("u:u1", Event("c", "t1", "click", T0 + 4 * DAY_MS + 1, POS, user_id="u1", channel="email")))
    assert [t[4] for t in lg.state.touches] == ["c"]


def test_a_touch_digest_counts_only_at_a_digest_boundary() -> None:
    digest = hashlib.blake2b(b"x", digest_size=8).digest()
    j = Journey()
    j.recent_touch_ids = b"\0" * 4 + digest + b"\0" * 4  # the digest of "x" straddles two remembered digests
    lg = logic()
    lg._packed, lg._refs = j.pack()
    assert not [d for d in feed(lg, touch("x", 0, "email")) if isinstance(d, DeadLetter)]
    assert [d for d in feed(lg, touch("x", 0, "email")) if isinstance(d, DeadLetter)]


def test_seen_conversions_are_bounded() -> None:
    lg = logic()
    feed(lg, *(conversion(f"v{i}", i * 0.01, f"o{i}") for i in range(MAX_SEEN_CONVERSIONS + 3)))
    seen = lg.state.seen_conversions
    assert [c for c, _ in seen] == [f"o{i}" for i in range(3, MAX_SEEN_CONVERSIONS + 3)]
    # forgotten once older than the idle TTL (event time)
    feed(lg, touch("late", 29.9, "email"))
    assert len(lg.state.seen_conversions) == MAX_SEEN_CONVERSIONS
    lg2 = logic(TenantConfig(idle_ttl_days=2))
    feed(lg2, conversion("v", 0, "o1"), touch("a", 1.5, "email"), touch("b", 2.5, "email"))
    assert lg2.state.seen_conversions == []


# -- the packed logic against the plain model it replaced (layout 2) --------------


def expected_final(events: list[PersonEvent], cfg: TenantConfig) -> dict[str, tuple[int, list[CreditRow]]]:
    """The batch answer, from the set of events alone: per conversion id, its revision and credit rows.

    A conversion credits the eligible touchpoints after the previous conversion in event time (ties by
    packed id) and within lookback; its revision counts the touchpoints and other conversions in the
    longest lookback before it.
    """
    horizon = max(cfg.lookback_ms("click"), cfg.lookback_ms("impression"))
    touches = sorted(
        {
            (pe.event.ts_ms, pe.event.event_type, pe.event.channel, pe.event.campaign_id, pe.event.event_id)
            for pe in events
            if pe.event.is_touch and is_touchpoint(pe, cfg)
        }
    )
    unique = {pe.event.event_id: pe for pe in events if pe.event.conversion}.values()
    convs = sorted(
        ((pe.event.ts_ms, pack_id(pe.event.conversion.conversion_id), pe) for pe in unique),
        key=lambda c: (c[0], c[1]),
    )
    out = {}
    for i, (ts, _, pe) in enumerate(convs):
        conv = pe.event.conversion
        after = convs[i - 1][0] if i else -1
        eligible = [t for t in touches if after < t[0] <= ts and ts - t[0] <= cfg.lookback_ms(t[1])]
        revision = sum(1 for t in touches if ts - horizon <= t[0] <= ts) + sum(
            1 for c in convs if ts - horizon <= c[0] <= ts and c[2] is not pe
        )
        oc = OpenConversion(conv.conversion_id, ts, pe.event.event_id, conv.value, conv.currency, conv.type)
        out[conv.conversion_id] = (revision, credit_rows("t1", "u:u1", oc, eligible, cfg, revision=revision))
    return out


def run_in_batches(
    cfg: TenantConfig, events: list[PersonEvent], cuts: list[int]
) -> tuple[list[ScoredConversion], JourneyLogic]:
    """Feed ``events`` in batches cut at ``cuts``, resuming from a pickled snapshot after each batch."""
    lg = logic(cfg)
    scored: list[ScoredConversion] = []
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        emitted, discard = lg.on_batch(events[lo:hi])
        assert discard is False
        scored.extend(e for e in emitted if isinstance(e, ScoredConversion))
        lg = JourneyLogic(lg._ctx.env, pickle.loads(pickle.dumps(lg.snapshot())))
    return scored, lg


def latest(scored: list[ScoredConversion]) -> dict[str, tuple[int, list[CreditRow]]]:
    """Per conversion id, its highest revision and that scoring's rows (what ``attribution_credits_latest`` shows)."""
    best: dict[str, ScoredConversion] = {}
    for sc in scored:
        cid = sc.conversion.conversion_id
        if cid not in best or sc.revision > best[cid].revision:
            best[cid] = sc
    return {cid: (sc.revision, list(sc.credits)) for cid, sc in best.items()}


def kpi_totals(scored: list[ScoredConversion]) -> dict[tuple[int, str, str], tuple[float, int]]:
    """What the conversions' KPI deltas add up to per (time, channel, campaign): credit and revision."""
    totals: dict[tuple[int, str, str], tuple[float, int]] = {}
    for sc in scored:
        for d in sc.kpi_deltas:
            credit, events = totals.get((d.ts_ms, d.channel, d.campaign_id), (0.0, 0))
            totals[(d.ts_ms, d.channel, d.campaign_id)] = (credit + d.conversions, events + d.events)
    return {k: (round(c, 9), n) for k, (c, n) in totals.items()}


HOUR = DAY_MS // 24
touch_events = st.builds(
    lambda ms, etype, channel, campaign, utm: (ms, etype, channel, campaign, utm),
    st.integers(0, 24 * 25).map(lambda h: h * HOUR) | st.sampled_from([0, 1, 2 * DAY_MS + 1]),
    st.sampled_from(["click", "page_view", "impression"]),
    st.sampled_from(["email", "display", "paid_search", "(internal)"]),
    st.sampled_from(["", "c1", "c2"]),
    st.sampled_from([EMPTY_UTM, Utm("google", "cpc"), Utm("newsletter", "email", "spring", "a", "b")]),
)
conversion_events = st.builds(
    lambda ms, value: (ms, value),
    st.integers(0, 24 * 25).map(lambda h: h * HOUR) | st.sampled_from([1, 2 * DAY_MS + 1]),
    st.sampled_from([0.0, 10.0, 99.5]),
)


@st.composite
def person_events(draw: st.DrawFn) -> list[PersonEvent]:
    """Distinct touches and conversions of one person within 25 days (inside every bound), some sent twice."""
    events = []
    for i, (ms, etype, channel, campaign, utm) in enumerate(draw(st.lists(touch_events, max_size=24))):
        eid = draw(st.sampled_from([f"t{i}", str(uuid.UUID(int=i))]))
        ev = Event(eid, "t1", etype, T0 + ms, POS, user_id="u1", channel=channel, campaign_id=campaign, utm=utm)
        events.append(PersonEvent("u:u1", ev))
    for i, (ms, value) in enumerate(draw(st.lists(conversion_events, max_size=6))):
        conv = Conversion(draw(st.sampled_from([f"o{i}", str(uuid.UUID(int=1000 + i))])), value, "EUR")
        events.append(
            PersonEvent("u:u1", Event(f"v{i}", "t1", "conversion", T0 + ms, POS, user_id="u1", conversion=conv))
        )
    twice = draw(st.lists(st.sampled_from(events), max_size=3)) if events else []
    return events + twice


@settings(max_examples=300, deadline=None)
@given(
    events=person_events(),
    order=st.randoms(use_true_random=False),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    cfg=st.builds(
        TenantConfig,
        view_through=st.booleans(),
        impression_lookback_days=st.sampled_from([0.5, 1.0]),
    ),
)
def test_the_highest_revision_is_the_batch_answer_in_any_order(
    events: list[PersonEvent], order: random.Random, cuts: list[int], cfg: TenantConfig
) -> None:
    """Any arrival order and batching, resumed from pickled snapshots: every conversion's highest revision
    holds exactly the batch answer, revisions only rise, and the KPI deltas add up to the same windows."""
    in_time = sorted(events, key=lambda pe: pe.event.ts_ms)
    shuffled = events[:]
    order.shuffle(shuffled)
    want = expected_final(events, cfg)
    scored_in_time, _ = run_in_batches(cfg, in_time, [])
    scored, lg = run_in_batches(cfg, shuffled, cuts)
    assert latest(scored) == want
    assert latest(scored_in_time) == want
    revisions: dict[str, list[int]] = {}
    for sc in scored:
        revisions.setdefault(sc.conversion.conversion_id, []).append(sc.revision)
    assert all(r == sorted(set(r)) for r in revisions.values()), revisions
    assert kpi_totals(scored) == kpi_totals(scored_in_time)
    final_kpi = {}
    for _rev, rows in want.values():
        for r in rows:
            if r.model == cfg.kpi_model:
                key = (r.conversion_ts_ms, r.channel, r.campaign_id)
                final_kpi[key] = round(final_kpi.get(key, 0.0) + r.credit, 9)
    got_kpi = {k: c for k, (c, _) in kpi_totals(scored).items() if c}
    assert got_kpi == {k: c for k, c in final_kpi.items() if c}
    assert sorted(t[4] for t in lg.state.touches) == sorted(
        {pe.event.event_id for pe in events if pe.event.is_touch and is_touchpoint(pe, cfg)}
    )
