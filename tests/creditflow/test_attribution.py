"""Tests of the pure attribution maths: hand-computed tables, then Hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditflow.attribution import (
    AttributionError,
    data_driven,
    first_touch,
    last_touch,
    linear,
    position_based,
    score,
    split_revenue,
    time_decay,
)
from creditflow.config import DAY_MS, MODELS, TenantConfig
from creditflow.errors import CreditflowError

HOUR_MS = 3_600_000
YEAR_MS = 365 * DAY_MS
SUM_TOL = 1e-12


def assert_shares(got: list[float], expected: list[float]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-12, abs=1e-15)


def assert_valid_shares(shares: list[float], n: int) -> None:
    assert len(shares) == n
    assert all(s >= 0.0 for s in shares), shares
    assert abs(sum(shares) - 1.0) <= SUM_TOL, sum(shares)


# ---------------------------------------------------------------------------
# Hand-computed tables
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "n", "expected"),
    [
        (first_touch, 0, []),
        (first_touch, 1, [1.0]),
        (first_touch, 2, [1.0, 0.0]),
        (first_touch, 4, [1.0, 0.0, 0.0, 0.0]),
        (last_touch, 0, []),
        (last_touch, 1, [1.0]),
        (last_touch, 2, [0.0, 1.0]),
        (last_touch, 4, [0.0, 0.0, 0.0, 1.0]),
        (linear, 0, []),
        (linear, 1, [1.0]),
        (linear, 2, [0.5, 0.5]),
        (linear, 3, [1 / 3, 1 / 3, 1 / 3]),
        (linear, 4, [0.25, 0.25, 0.25, 0.25]),
    ],
)
def test_rule_based_models(fn, n, expected):
    assert_shares(fn(n), expected)


@pytest.mark.parametrize("fn", [first_touch, last_touch, linear, position_based])
def test_negative_touch_count_is_rejected(fn):
    with pytest.raises(AttributionError, match="must be >= 0"):
        fn(-1)


@pytest.mark.parametrize(
    ("touch_ts", "conversion_ts", "half_life", "expected"),
    [
        # ages 14 d, 7 d, 0 d with a 7 d half-life: weights 1/4, 1/2, 1 -> 1/7, 2/7, 4/7
        ([0, 7 * DAY_MS, 14 * DAY_MS], 14 * DAY_MS, 7 * DAY_MS, [1 / 7, 2 / 7, 4 / 7]),
        # one touch gets everything, whatever its age
        ([123], 10 * YEAR_MS, HOUR_MS, [1.0]),
        # equal ages: linear
        ([5, 5, 5, 5], 100, 10.0, [0.25, 0.25, 0.25, 0.25]),
        # ages 2 h and 1 h, 1 h half-life: weights 1/2, 1 -> 1/3, 2/3
        ([0, HOUR_MS], 2 * HOUR_MS, HOUR_MS, [1 / 3, 2 / 3]),
        # the same journey ten years later: still 1/3, 2/3 (no underflow to all-zero)
        ([0, HOUR_MS], 10 * YEAR_MS, HOUR_MS, [1 / 3, 2 / 3]),
        # a touch stamped after the conversion has age 0 (clipped): ages 1 d, 0, 0 -> 1/5, 2/5, 2/5
        ([DAY_MS, 2 * DAY_MS, 3 * DAY_MS], 2 * DAY_MS, DAY_MS, [0.2, 0.4, 0.4]),
        # journey order need not be age order: the weights follow each touch
        ([2 * DAY_MS, 0, DAY_MS], 2 * DAY_MS, DAY_MS, [4 / 7, 1 / 7, 2 / 7]),
        # a year apart with a 1 h half-life: the old touch underflows to 0, the young one keeps 1
        ([0, YEAR_MS], YEAR_MS, HOUR_MS, [0.0, 1.0]),
        # half-lives need not be whole milliseconds
        ([0, 1], 1, 0.5, [0.2, 0.8]),
    ],
)
def test_time_decay(touch_ts, conversion_ts, half_life, expected):
    assert_shares(time_decay(touch_ts, conversion_ts, half_life), expected)


def test_time_decay_all_touches_after_the_conversion_are_linear():
    assert_shares(time_decay([5 * DAY_MS, 9 * DAY_MS], 0, DAY_MS), [0.5, 0.5])


def test_time_decay_empty_journey():
    assert time_decay([], 0, DAY_MS) == []


@pytest.mark.parametrize("half_life", [0, 0.0, -1.0, math.nan, -math.inf])
def test_time_decay_rejects_bad_half_life(half_life):
    with pytest.raises(AttributionError, match="half_life_ms must be > 0"):
        time_decay([0, 1], 2, half_life)


@pytest.mark.parametrize(
    ("n", "first", "last", "expected"),
    [
        (0, 0.4, 0.4, []),
        (1, 0.4, 0.4, [1.0]),
        (1, 0.0, 0.0, [1.0]),
        (2, 0.4, 0.4, [0.5, 0.5]),
        (2, 0.6, 0.2, [0.75, 0.25]),
        (2, 0.0, 0.3, [0.0, 1.0]),
        (2, 0.0, 0.0, [0.5, 0.5]),
        (3, 0.4, 0.4, [0.4, 0.2, 0.4]),
        (3, 0.5, 0.5, [0.5, 0.0, 0.5]),
        (3, 0.0, 0.0, [0.0, 1.0, 0.0]),
        (4, 0.3, 0.5, [0.3, 0.1, 0.1, 0.5]),
        (5, 0.4, 0.4, [0.4, 0.2 / 3, 0.2 / 3, 0.2 / 3, 0.4]),
        (5, 0.25, 0.15, [0.25, 0.2, 0.2, 0.2, 0.15]),
    ],
)
def test_position_based(n, first, last, expected):
    assert_shares(position_based(n, first, last), expected)


def test_position_based_defaults_are_40_20_40():
    assert_shares(position_based(3), [0.4, 0.2, 0.4])


@pytest.mark.parametrize(("first", "last"), [(-0.1, 0.4), (0.4, -0.1), (0.7, 0.4), (1.5, 0.0), (math.nan, 0.4)])
def test_position_based_rejects_bad_shares(first, last):
    with pytest.raises(AttributionError, match="position shares"):
        position_based(3, first, last)


@pytest.mark.parametrize(
    ("channels", "weights", "expected"),
    [
        (["search", "email", "search"], {"search": 3.0, "email": 2.0}, [0.375, 0.25, 0.375]),
        (["search", "social"], {"search": 1.0, "social": 3.0}, [0.25, 0.75]),
        # a channel without a weight earns nothing
        (["search", "display", "email"], {"search": 1.0, "email": 1.0}, [0.5, 0.0, 0.5]),
        # a zero weight earns nothing
        (["search", "display"], {"search": 2.0, "display": 0.0}, [1.0, 0.0]),
        # weights need not be normalized, and ints are fine
        (["a", "b"], {"a": 1, "b": 4}, [0.2, 0.8]),
        # huge weights do not overflow the total
        (["a", "b"], {"a": 1e308, "b": 1e308}, [0.5, 0.5]),
        # tiny (subnormal) weights still count
        (["a", "b"], {"a": 5e-324, "b": 5e-324}, [0.5, 0.5]),
        # one touch
        (["a"], {"a": 0.3}, [1.0]),
        # linear fallback: every weight zero, every channel missing, empty mapping
        (["a", "b", "c", "d"], {"a": 0.0, "b": 0.0}, [0.25, 0.25, 0.25, 0.25]),
        (["a", "b"], {"z": 5.0}, [0.5, 0.5]),
        (["a", "b", "c"], {}, [1 / 3, 1 / 3, 1 / 3]),
        # empty journey
        ([], {"a": 1.0}, []),
    ],
)
def test_data_driven(channels, weights, expected):
    assert_shares(data_driven(channels, weights), expected)


@pytest.mark.parametrize("bad", [-1.0, -1e-300, math.inf, -math.inf, math.nan])
def test_data_driven_rejects_bad_weight_naming_the_channel(bad):
    with pytest.raises(AttributionError, match="'display'"):
        data_driven(["search", "display"], {"search": 1.0, "display": bad})


def test_data_driven_only_reads_the_journeys_weights():
    # A bad weight of a channel the journey does not use is not looked at.
    assert data_driven(["search"], {"search": 1.0, "display": -1.0}) == [1.0]


def test_attribution_error_is_a_value_error_and_a_creditflow_error():
    assert issubclass(AttributionError, ValueError)
    assert issubclass(AttributionError, CreditflowError)


# ---------------------------------------------------------------------------
# score(): dispatch on the model name
# ---------------------------------------------------------------------------

TS = [0, 7 * DAY_MS, 14 * DAY_MS]
CHANNELS = ["search", "email", "social"]
CONVERSION_TS = 14 * DAY_MS
WEIGHTS = {"search": 1.0, "email": 2.0, "social": 5.0}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("first_touch", [1.0, 0.0, 0.0]),
        ("last_touch", [0.0, 0.0, 1.0]),
        ("linear", [1 / 3, 1 / 3, 1 / 3]),
        ("time_decay", [1 / 7, 2 / 7, 4 / 7]),
        ("position_based", [0.4, 0.2, 0.4]),
        ("data_driven", [0.125, 0.25, 0.625]),
    ],
)
def test_score_dispatches_every_model(model, expected):
    assert_shares(score(model, TS, CHANNELS, CONVERSION_TS, TenantConfig(), WEIGHTS), expected)


def test_score_covers_every_configured_model():
    for model in MODELS:
        assert_valid_shares(score(model, TS, CHANNELS, CONVERSION_TS, TenantConfig(), WEIGHTS), 3)


def test_score_uses_the_tenants_settings():
    cfg = TenantConfig(half_life_days=14, position_first=0.6, position_last=0.2)
    # ages 14 d, 7 d, 0 d with a 14 d half-life: weights 1/2, 1/sqrt(2), 1
    w = [0.5, 2**-0.5, 1.0]
    assert_shares(score("time_decay", TS, CHANNELS, CONVERSION_TS, cfg), [x / sum(w) for x in w])
    assert_shares(score("position_based", TS, CHANNELS, CONVERSION_TS, cfg), [0.6, 0.2, 0.2])


def test_score_data_driven_without_weights_is_linear():
    assert_shares(score("data_driven", TS, CHANNELS, CONVERSION_TS, TenantConfig()), [1 / 3, 1 / 3, 1 / 3])
    assert_shares(score("data_driven", TS, CHANNELS, CONVERSION_TS, TenantConfig(), None), [1 / 3, 1 / 3, 1 / 3])


@pytest.mark.parametrize("model", MODELS)
def test_score_empty_journey(model):
    assert score(model, [], [], 0, TenantConfig()) == []


def test_score_unknown_model_lists_valid_names():
    with pytest.raises(AttributionError, match="unknown attribution model 'shapley'") as info:
        score("shapley", TS, CHANNELS, CONVERSION_TS, TenantConfig())
    for model in MODELS:
        assert model in str(info.value)


def test_score_rejects_mismatched_lengths():
    with pytest.raises(AttributionError, match="same touches"):
        score("linear", TS, CHANNELS[:2], CONVERSION_TS, TenantConfig())


# ---------------------------------------------------------------------------
# split_revenue()
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shares", "value", "expected"),
    [
        ([1.0], 42.5, [42.5]),
        ([0.5, 0.25, 0.25], 10.0, [5.0, 2.5, 2.5]),
        ([0.0, 1.0], 99.99, [0.0, 99.99]),
        ([0.4, 0.2, 0.4], 0.0, [0.0, 0.0, 0.0]),
        ([0.25, 0.75], -20.0, [-5.0, -15.0]),  # refunds split the same way
        ([], 10.0, []),
    ],
)
def test_split_revenue(shares, value, expected):
    assert_shares(split_revenue(shares, value), expected)


def test_split_revenue_puts_the_residue_on_the_largest_share():
    shares, value = [1 / 7, 4 / 7, 2 / 7], 1e9
    naive = [value * c for c in shares]
    residue = value - math.fsum(naive)
    assert residue != 0.0  # the case is only interesting if plain products miss the value
    got = split_revenue(shares, value)
    assert got == [naive[0], naive[1] + residue, naive[2]]
    assert math.fsum(got) == value


def test_split_revenue_ties_go_to_the_first_largest_share():
    shares, value = linear(7), 10.0
    naive = [value * c for c in shares]
    got = split_revenue(shares, value)
    assert got[0] != naive[0]
    assert got[1:] == naive[1:]


@pytest.mark.parametrize("shares", [[0.5, 0.4], [0.7, 0.7], [2.0], [-1.0, 2.0 + 1e-6]])
def test_split_revenue_rejects_credits_not_summing_to_one(shares):
    with pytest.raises(AttributionError, match="credits must sum to 1"):
        split_revenue(shares, 10.0)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_split_revenue_rejects_non_finite_value(value):
    with pytest.raises(AttributionError, match="must be finite"):
        split_revenue([1.0], value)


# ---------------------------------------------------------------------------
# Hypothesis properties
# ---------------------------------------------------------------------------

TS_BOUND = 2**60  # far beyond any real epoch millisecond, either side of 1970
timestamps = st.integers(min_value=-TS_BOUND, max_value=TS_BOUND)
channel_names = st.sampled_from(["search", "social", "email", "display", "affiliate", "direct", "video"])
weights_maps = st.dictionaries(
    channel_names,
    st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e308, allow_nan=False, allow_infinity=False)),
)


@st.composite
def journeys(draw: st.DrawFn, min_size: int = 1, max_size: int = 200) -> tuple[list[int], list[str], int]:
    """(touch timestamps, channels, conversion timestamp) of one journey."""
    n = draw(st.integers(min_value=min_size, max_value=max_size))
    touch_ts = draw(st.lists(timestamps, min_size=n, max_size=n))
    channels = draw(st.lists(channel_names, min_size=n, max_size=n))
    return touch_ts, channels, draw(timestamps)


@st.composite
def tenant_configs(draw: st.DrawFn) -> TenantConfig:
    half_life_days = draw(st.floats(min_value=1e-9, max_value=1e6))  # ~0.1 ms .. ~2700 years
    first = draw(st.floats(min_value=0.0, max_value=1.0))
    last = draw(st.floats(min_value=0.0, max_value=1.0 - first))
    if first + last > 1.0:  # 1.0 - first may round up
        last = 0.0
    return TenantConfig(half_life_days=half_life_days, position_first=first, position_last=last)


@given(journey=journeys(), cfg=tenant_configs(), weights=weights_maps)
def test_every_model_sums_to_one_and_is_non_negative(journey, cfg, weights):
    touch_ts, channels, conversion_ts = journey
    for model in MODELS:
        assert_valid_shares(score(model, touch_ts, channels, conversion_ts, cfg, weights), len(touch_ts))


@given(
    journey=journeys(),
    half_life=st.floats(min_value=1e-3, max_value=1e15),
    value=st.floats(min_value=0.0, max_value=1e9),
    weights=weights_maps,
)
def test_split_revenue_sums_to_value(journey, half_life, value, weights):
    touch_ts, channels, conversion_ts = journey
    n = len(touch_ts)
    for shares in (
        first_touch(n),
        linear(n),
        position_based(n),
        time_decay(touch_ts, conversion_ts, half_life),
        data_driven(channels, weights),
    ):
        revenue = split_revenue(shares, value)
        assert len(revenue) == n
        assert all(r >= 0.0 for r in revenue)
        assert abs(sum(revenue) - value) <= 1e-9 * max(1.0, abs(value))


@given(journey=journeys(), half_life=st.floats(min_value=1e-3, max_value=1e15))
def test_time_decay_is_monotone_in_age(journey, half_life):
    touch_ts, _, conversion_ts = journey
    shares = time_decay(touch_ts, conversion_ts, half_life)
    ages = [max(0, conversion_ts - ts) for ts in touch_ts]
    by_age = sorted(range(len(ages)), key=ages.__getitem__)
    for younger, older in zip(by_age, by_age[1:], strict=False):
        assert shares[younger] >= shares[older], (ages[younger], ages[older])
        if ages[younger] == ages[older]:
            assert shares[younger] == shares[older]
    # the youngest touch always keeps a positive share: nothing underflows to all-zero
    assert shares[by_age[0]] > 0.0


@given(n=st.integers(min_value=3, max_value=200))
def test_position_based_ends_dominate_the_middle(n):
    shares = position_based(n)
    assert shares[0] == shares[-1] == 0.4
    assert all(shares[0] > middle and shares[-1] > middle for middle in shares[1:-1])
    assert len(set(shares[1:-1])) == 1


@given(n=st.integers(min_value=1, max_value=200))
def test_rule_based_models_sum_to_one(n):
    for shares in (first_touch(n), last_touch(n), linear(n), position_based(n)):
        assert_valid_shares(shares, n)


@given(channels=st.lists(channel_names, min_size=1, max_size=200), weights=weights_maps)
@settings(max_examples=200)
def test_data_driven_is_proportional_to_channel_weight(channels, weights):
    shares = data_driven(channels, weights)
    assert_valid_shares(shares, len(channels))
    ws = [weights.get(c, 0.0) for c in channels]
    if max(ws) == 0.0:
        assert shares == linear(len(channels))
        return
    top = max(range(len(ws)), key=ws.__getitem__)
    for w, s in zip(ws, shares, strict=True):
        # share / top share == weight / top weight (both ratios in [0, 1])
        assert s / shares[top] == pytest.approx(w / ws[top], rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------
# data_driven with a trained model's recency and split rule
# ---------------------------------------------------------------------------


def test_data_driven_recency_halves_a_touch_per_half_life():
    ts = [0, 2 * DAY_MS, 4 * DAY_MS]
    shares = data_driven(["a", "a", "a"], {"a": 1.0}, ts, 4 * DAY_MS, half_life_days=2.0)
    assert_shares(shares, [1 / 7, 2 / 7, 4 / 7])


def test_data_driven_per_channel_shares_a_channels_weight_among_its_touches():
    # Markov/Shapley weights belong to the channel: three email touches share email's 1.0
    shares = data_driven(["email", "email", "search", "email"], {"email": 1.0, "search": 1.0}, per_channel=True)
    assert_shares(shares, [1 / 6, 1 / 6, 1 / 2, 1 / 6])


def test_score_passes_the_trained_recency_and_split_to_data_driven():
    from creditflow.weights import ScoringWeights

    w = ScoringWeights(3, {"search": 1.0, "email": 1.0}, half_life_days=7.0, split="per_touch")
    shares = score("data_driven", TS, CHANNELS, CONVERSION_TS, TenantConfig(), w)
    assert_shares(shares, [0.25 / 0.75, 0.5 / 0.75, 0.0])  # social has no weight; two half-lives, one


def test_data_driven_recency_needs_times_and_a_positive_half_life():
    with pytest.raises(AttributionError, match="one touch time per channel"):
        data_driven(["a"], {"a": 1.0}, half_life_days=1.0)
    with pytest.raises(AttributionError, match="half_life_days"):
        data_driven(["a"], {"a": 1.0}, [0], 0, half_life_days=0.0)


@given(
    journey=journeys(),
    half_life=st.one_of(st.none(), st.floats(min_value=1e-3, max_value=1e6)),
    per_channel=st.booleans(),
    value=st.floats(min_value=0.0, max_value=1e9),
    weights=weights_maps,
)
@settings(max_examples=200)
def test_trained_data_driven_credits_sum_to_one_and_revenue_to_the_value(
    journey, half_life, per_channel, value, weights
):
    touch_ts, channels, conversion_ts = journey
    shares = data_driven(channels, weights, touch_ts, conversion_ts, half_life, per_channel)
    assert_valid_shares(shares, len(channels))
    revenue = split_revenue(shares, value)
    assert abs(sum(revenue) - value) <= 1e-9 * max(1.0, abs(value))
    # shifting every touch by the same time (measuring from the last touch, as training does) changes nothing
    spread_days = (conversion_ts - min(touch_ts)) / DAY_MS if touch_ts else 0.0
    if touch_ts and (half_life is None or spread_days / half_life < 500):  # no weight underflows to 0
        shift = max(conversion_ts - max(touch_ts), 0)
        moved = data_driven(channels, weights, [t + shift for t in touch_ts], conversion_ts, half_life, per_channel)
        assert moved == pytest.approx(shares, rel=1e-6, abs=1e-12)
