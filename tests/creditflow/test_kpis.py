"""KPI increments per event type and volume source, and the ratio formulas."""

from __future__ import annotations

import pytest

from creditflow.events import Event, SourcePosition, SpendMetrics
from creditflow.kpis import delta_of, ratios

POS = SourcePosition("t", "p", "0")


def ev(etype: str, **kw: object) -> Event:
    return Event("e", "t1", etype, 0, POS, user_id="u", channel="display", campaign_id="c", **kw)  # type: ignore[arg-type]


SPEND = ev("ad_spend", metrics=SpendMetrics(impressions=100, clicks=7, cost=12.5))


@pytest.mark.parametrize(
    ("event", "source", "expected"),
    [
        (ev("impression"), "events", (1, 0, 0.0)),
        (ev("click"), "events", (0, 1, 0.0)),
        (SPEND, "events", (0, 0, 12.5)),  # cost always from spend, volume from tracked events
        (SPEND, "ad_spend", (100, 7, 12.5)),
        (ev("click"), "ad_spend", None),  # volume from spend reports only
        (ev("page_view"), "events", None),
        (ev("identify"), "events", None),
    ],
)
def test_delta_of(event: Event, source: str, expected: tuple | None) -> None:
    d = delta_of(event, source)
    got = None if d is None else (d.impressions, d.clicks, d.cost)
    assert got == expected
    if d is not None:
        assert (d.tenant_id, d.channel, d.campaign_id, d.position) == ("t1", "display", "c", POS)


def test_ratios_are_none_on_zero_denominators() -> None:
    assert ratios(200, 10, 2.0, 50.0, 0.0) == (0.05, 0.2, 25.0, 0.0)
    assert ratios(0, 3, 0.0, 0.0, 9.0) == (None, 0.0, None, None)
