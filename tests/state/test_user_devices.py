"""A user key's snapshot is a plain row; the object the previous release pickled still resumes and forgets."""

from __future__ import annotations

import pickle
import pickletools

from creditflow.config import TenantConfig, TenantConfigs
from creditflow.events import Event, SourcePosition
from operators.state_guard import guarded_builder
from state.device_graph import ForgetDevice
from state.user_devices import (
    USER_DEVICES_LAYOUT,
    USER_DEVICES_LAYOUT_AT,
    UserDevices,
    UserDevicesEnv,
    UserDevicesLogic,
)

POS = SourcePosition("f", "0", "0")
ENV = UserDevicesEnv(TenantConfigs(TenantConfig(identity_graph=True, identity_ttl_days=1)), now=lambda: 10.0)

# Captured from 0de4c24, which pickled the dataclass through its name: UserDevices("t", ("a:lap", "d:phone"), 5.0).
USER_DEVICES_OBJECT = (
    b"\x80\x05\x95N\x00\x00\x00\x00\x00\x00\x00\x8c\x12state.user_devices\x94\x8c\x0bUserDevices\x94\x93\x94("
    b"\x8c\x01t\x94\x8c\x05a:lap\x94\x8c\x07d:phone\x94\x86\x94G@\x14\x00\x00\x00\x00\x00\x00K\x01t\x94R\x94."
)


def test_a_user_key_of_the_previous_release_resumes_and_forgets_its_devices() -> None:
    old = pickle.loads(USER_DEVICES_OBJECT)
    logic = guarded_builder(
        "user_devices", USER_DEVICES_LAYOUT, lambda r: UserDevicesLogic(ENV, r), USER_DEVICES_LAYOUT_AT
    )(old)
    assert logic.notify_at_s() == 5.0 + 86_400.0
    out, discard = logic.on_batch([Event("x1", "t", "deletion_request", 9, POS, user_id="ann")])
    assert list(out) == [ForgetDevice("t", "a:lap", "ann", 9), ForgetDevice("t", "d:phone", "ann", 9)]
    assert discard


def test_a_user_key_snapshots_a_plain_row_that_resumes_the_same() -> None:
    logic = UserDevicesLogic(ENV, None)
    logic.on_batch([Event("i1", "t", "identify", 1, POS, anonymous_id="lap", user_id="ann")])
    row = logic.snapshot()
    assert type(row) is tuple and UserDevices(*row) == UserDevices("t", ("a:lap",), 10.0)
    ops = {op.name for op, _arg, _pos in pickletools.genops(pickle.dumps(row, pickle.HIGHEST_PROTOCOL))}
    assert not ops & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "NEWOBJ", "BUILD"}  # no class name in every key's row
    resumed = UserDevicesLogic(ENV, pickle.loads(pickle.dumps(row)))
    assert resumed.snapshot() == row
