"""The device graph's snapshot keeps the device's own consent decision, and older snapshots still load."""

from __future__ import annotations

import pickle

from creditflow.config import TenantConfig, TenantConfigs
from creditflow.consent import CONSENT_GRANTED, CONSENT_UNKNOWN, CONSENT_WITHDRAWN
from creditflow.events import Event, SourcePosition
from creditflow.weights import NoWeights
from state.device_graph import DeviceLogic, DeviceState
from state.journeys import JourneyEnv

POS = SourcePosition("f", "0", "0")
ENV = JourneyEnv(TenantConfigs(TenantConfig(consent_mode="opt_in")), NoWeights(), now=lambda: 1_000.0)


def consent(ts: int, granted: bool, **ids: str) -> Event:
    return Event(f"c{ts}", "t", "consent", ts, POS, metadata={"consent": {"analytics": granted}}, **ids)


def test_a_granted_device_resumes_granted_and_links_at_the_next_login() -> None:
    device = DeviceLogic(ENV, None)
    device.on_batch([consent(1_000, True, device_id="d1")])
    state = pickle.loads(pickle.dumps(device.snapshot()))
    assert (state.consent, state.consent_ts_ms) == (CONSENT_GRANTED, 1_000)

    resumed = DeviceLogic(ENV, state)
    resumed.on_batch([Event("login", "t", "identify", 2_000, POS, device_id="d1", user_id="u1")])
    assert resumed.linked_user == "u1"


def test_without_a_grant_a_login_links_nothing_and_an_older_decision_does_not_win() -> None:
    device = DeviceLogic(ENV, None)
    device.on_batch([consent(5_000, False, device_id="d1"), consent(4_000, True, device_id="d1")])
    device.on_batch([Event("login", "t", "identify", 6_000, POS, device_id="d1", user_id="u1")])
    assert device.linked_user == ""
    assert device.snapshot().consent == CONSENT_WITHDRAWN


def test_a_snapshot_from_before_device_consent_loads_as_unknown() -> None:
    old = DeviceState("t", "u1", 1.0, 5.0, None, 1)  # the six fields pickled before consent existed
    restored = pickle.loads(pickle.dumps(old))
    assert (restored.user_id, restored.consent, restored.consent_ts_ms) == ("u1", CONSENT_UNKNOWN, -1)
    assert len(old.__reduce__()[1]) == 6  # an undecided device pickles as before
