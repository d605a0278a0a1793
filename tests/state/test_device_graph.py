"""The device graph's snapshot keeps the device's own consent decision, is plain values, and older snapshots
still load."""

from __future__ import annotations

import pickle
import pickletools

from creditflow.config import TenantConfig, TenantConfigs
from creditflow.consent import CONSENT_GRANTED, CONSENT_UNKNOWN, CONSENT_WITHDRAWN
from creditflow.events import Event, SourcePosition, Utm
from creditflow.weights import NoWeights
from state.device_graph import DeviceLogic, DeviceState
from state.journey_state import JourneyState
from state.journeys import JourneyEnv

POS = SourcePosition("f", "0", "0")
ENV = JourneyEnv(TenantConfigs(TenantConfig(consent_mode="opt_in")), NoWeights(), now=lambda: 1_000.0)


def consent(ts: int, granted: bool, **ids: str) -> Event:
    return Event(f"c{ts}", "t", "consent", ts, POS, metadata={"consent": {"analytics": granted}}, **ids)


def test_a_granted_device_resumes_granted_and_links_at_the_next_login() -> None:
    device = DeviceLogic(ENV, None)
    device.on_batch([consent(1_000, True, device_id="d1")])
    state = DeviceState(*pickle.loads(pickle.dumps(device.snapshot())))
    assert (state.consent, state.consent_ts_ms) == (CONSENT_GRANTED, 1_000)

    resumed = DeviceLogic(ENV, state)
    resumed.on_batch([Event("login", "t", "identify", 2_000, POS, device_id="d1", user_id="u1")])
    assert resumed.linked_user == "u1"


def test_without_a_grant_a_login_links_nothing_and_an_older_decision_does_not_win() -> None:
    device = DeviceLogic(ENV, None)
    device.on_batch([consent(5_000, False, device_id="d1"), consent(4_000, True, device_id="d1")])
    device.on_batch([Event("login", "t", "identify", 6_000, POS, device_id="d1", user_id="u1")])
    assert device.linked_user == ""
    assert DeviceState(*device.snapshot()).consent == CONSENT_WITHDRAWN


def test_a_snapshot_from_before_device_consent_loads_as_unknown() -> None:
    old = DeviceState("t", "u1", 1.0, 5.0, None, 1)  # what a snapshot of the six fields before consent loads as
    restored = DeviceLogic(ENV, old)
    assert restored.linked_user == "u1"
    assert DeviceState(*restored.snapshot())[6:] == (CONSENT_UNKNOWN, -1)


# A granted device with one page view, pickled by the release before snapshot rows (a DeviceState object
# holding a JourneyState object, through their names).
OBJECT_SNAPSHOT = (
    b"\x80\x05\x95\xf6\x00\x00\x00\x00\x00\x00\x00\x8c\x12state.device_graph\x94\x8c\x0bDeviceState\x94\x93\x94("
    b"\x8c\x00\x94h\x03G\x00\x00\x00\x00\x00\x00\x00\x00G@\x8f@\x00\x00\x00\x00\x00\x8c\x13state.journey_state"
    b"\x94\x8c\x0b_load_state\x94\x93\x94K\x05CH\xdc\x05\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff"
    b"\x00\x00\x00\x00\x00@\x8f@\xdc\x05\x00\x00\x00\x00\x00\x00\xdc\x05\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00"
    b"\x01\xe8\x03\x00\x00\x00\x00\x00\x00\xdc\x05\x00\x00\x00\x00\x00\x00\xe8\x16e\xc9x\x94\xce\x91\x02p1\x94(("
    b"\x8c\x06google\x94\x8c\x03cpc\x94\x8c\x05brand\x94h\x03h\x03t\x94h\x0b)\x8c\tpage_view\x94h\x03h\x03\x87\x94t"
    b"\x94\x87\x94R\x94K\x01K\x01M\xe8\x03t\x94R\x94."
)


def test_a_snapshot_pickled_as_objects_by_the_previous_release_resumes_unchanged() -> None:
    device = DeviceLogic(ENV, pickle.loads(OBJECT_SNAPSHOT))
    state = DeviceState(*device.snapshot())
    assert (state.consent, state.consent_ts_ms, state.layout) == (CONSENT_GRANTED, 1_000, 1)
    journey = JourneyState.of_row(state.journey)
    assert journey.touches == [(1_500, "page_view", "", "", "p1")]
    assert journey.first_utm == (1_500, Utm("google", "cpc", "brand"))


def test_a_snapshot_row_pickles_without_a_single_object() -> None:
    device = DeviceLogic(ENV, pickle.loads(OBJECT_SNAPSHOT))
    ops = {op.name for op, _arg, _pos in pickletools.genops(pickle.dumps(device.snapshot(), 5))}
    assert not ops & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "NEWOBJ", "BUILD"}  # plain tuples: pickled in C
