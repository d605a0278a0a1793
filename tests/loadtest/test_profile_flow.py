"""The profile breakdown: every component of the flow shows up and the shares add up."""

from __future__ import annotations

import pytest

from loadtest.profile_flow import profile

pytestmark = pytest.mark.integration


def test_profile_names_where_the_time_goes() -> None:
    result = profile(persons=300, seed=7)
    shares = result["shares"]
    assert sum(shares.values()) == pytest.approx(1.0, abs=0.01)
    for component in ("decode", "journeys", "windows", "sink", "bytewax + snapshots"):
        assert shares.get(component, 0) > 0.005, (component, shares)
    assert result["events"] > 1000 and result["profiled_events_per_s"] > 0
