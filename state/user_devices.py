"""Which devices each user was linked to: how a ``deletion_request`` naming a user reaches their devices.

The device graph (``state.device_graph``) is keyed by device, so a user's
devices are spread over as many keys as the user has devices, and no key
knows them all. This step, keyed by (tenant, ``u:<user_id>``) and placed before
the device graph (dataflows have no cycles), remembers the devices that were
linked to each user: a device key from every event naming the user and a
device, and from every probable link strong enough for the tenant's
``link_threshold``. When a ``deletion_request`` names the user it sends a
``ForgetDevice`` to each of them; the device graph erases a device only if the
device is still linked to that user (a device a later login moved to someone
else is not touched).

Every deletion request also fans out, without state (``named_forgets``), to the
other keys it names itself (an anonymous id next to a device id), which the
device graph erases whatever their link.

Bounds (per user key): at most ``MAX_USER_DEVICES`` device keys, the most
recently linked kept; the whole state is discarded ``identity_ttl_days`` of
wall time after the last link, as the device graph forgets the links
themselves; a deletion request discards it at once.

>>> from creditflow.config import TenantConfigs
>>> from creditflow.events import SourcePosition
>>> env = UserDevicesEnv(TenantConfigs(), now=lambda: 0.0)
>>> pos = SourcePosition("f", "0", "0")
>>> logic = UserDevicesLogic(env, None)
>>> _ = logic.on_batch([Event("i1", "t", "identify", 1, pos, anonymous_id="lap", user_id="ann")])
>>> out, discard = logic.on_batch([Event("x1", "t", "deletion_request", 2, pos, user_id="ann")])
>>> out, discard
([ForgetDevice(tenant_id='t', device_key='a:lap', user_id='ann', requested_ts_ms=2)], True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from bytewax.operators import StatefulBatchLogic
from mypy_extensions import mypyc_attr

from creditflow.config import TenantConfigs
from creditflow.events import Event
from creditflow.forgotten import keys_of
from creditflow.kpis import KEY_SEP
from state.device_graph import ForgetDevice, device_person_of, passes_through
from state.probable_links import ProbableLink
from state.wake_time import SecondsWake

__all__ = [
    "MAX_USER_DEVICES",
    "USER_DEVICES_LAYOUT",
    "USER_DEVICES_LAYOUT_AT",
    "ForgetDevice",
    "UserDevices",
    "UserDevicesEnv",
    "UserDevicesLogic",
    "UserDevicesRow",
    "named_forgets",
    "user_key_of",
]

USER_DEVICES_LAYOUT = 1
"""Bump when ``UserDevices`` changes shape; snapshots of another layout are refused."""
STATE_LAYOUT_VERSION = USER_DEVICES_LAYOUT

MAX_USER_DEVICES = 16
"""Device keys remembered per user (the most recently linked)."""


class UserDevices(NamedTuple):
    """The fields of one user key's snapshot: the devices linked to the user, oldest first.

    ``UserDevicesLogic.snapshot`` returns them as a plain tuple in this order (a
    ``UserDevicesRow``): it pickles in C, and no key's row spells this class's
    module and name (~40 bytes each). A resume reads either, and snapshots of
    earlier creditflows (an object pickled through this name) load as a
    ``UserDevices``. ``UserDevices(*row)`` names a row's fields (tests, tools).
    """

    tenant_id: str
    device_keys: tuple[str, ...]
    linked_wall_s: float
    layout: int = USER_DEVICES_LAYOUT


UserDevicesRow = tuple[str, tuple[str, ...], float, int]
"""A ``UserDevices`` as a plain tuple (what ``UserDevicesLogic.snapshot`` returns)."""

USER_DEVICES_LAYOUT_AT = UserDevices._fields.index("layout")
"""Where a row holds its layout (``operators.state_guard``)."""


@mypyc_attr(native_class=False)  # pickled: snapshots, items between processes
@dataclass(frozen=True)
class UserDevicesEnv:
    configs: TenantConfigs
    now: Callable[[], float] = time.time


def user_key_of(item: Event | ProbableLink) -> str | None:
    """The (tenant, user) key this step reads ``item`` under, ``None`` if it tells nothing of a user's devices.

    Read: a ``deletion_request`` naming a user; an event naming a user and a device
    (under the graph: a link); any probable link (the logic checks its confidence).
    """
    if isinstance(item, ProbableLink):
        return f"{item.tenant_id}{KEY_SEP}u:{item.user_id}"
    if not item.user_id:
        return None
    if item.event_type == "deletion_request" or (item.device_id or item.anonymous_id):
        return f"{item.tenant_id}{KEY_SEP}u:{item.user_id}"
    return None


def named_forgets(event: Event, graph: bool) -> list[ForgetDevice]:
    """The device keys a deletion request names itself, besides the key the device graph reads it under.

    >>> from creditflow.events import SourcePosition
    >>> ev = Event("x", "t", "deletion_request", 0, SourcePosition("f", "0", "0"), anonymous_id="a1",
    ...            device_id="d1", user_id="u1")
    >>> named_forgets(ev, graph=True)
    [ForgetDevice(tenant_id='t', device_key='a:a1', user_id='', requested_ts_ms=0)]
    """
    if event.event_type != "deletion_request":
        return []
    own = "u:" + event.user_id if passes_through(event, graph) else device_person_of(event)
    return [
        ForgetDevice(event.tenant_id, key, "", event.ts_ms) for key in keys_of(event) if key != own and key[0] != "u"
    ]


class UserDevicesLogic(SecondsWake):
    """Bytewax stateful batch logic for one (tenant, user) key; see the module doc."""

    __slots__ = ("_env", "_tenant_id", "_devices", "_linked_wall_s")

    def __init__(self, env: UserDevicesEnv, resume: UserDevicesRow | UserDevices | None) -> None:
        self._env = env
        self._tenant_id = ""
        self._devices: tuple[str, ...] = ()
        self._linked_wall_s = 0.0
        if resume is not None:
            self._tenant_id, self._devices, self._linked_wall_s, _layout = resume

    def on_batch(self, values: list[Event | ProbableLink]) -> tuple[Iterable[ForgetDevice], bool]:
        out: list[ForgetDevice] = []
        for value in values:
            self._tenant_id = value.tenant_id
            cfg = self._env.configs.for_tenant(value.tenant_id)
            if isinstance(value, ProbableLink):
                if value.confidence >= cfg.link_threshold:
                    self._note(value.device_key)
            elif value.event_type == "deletion_request":
                out.extend(ForgetDevice(value.tenant_id, key, value.user_id, value.ts_ms) for key in self._devices)
                self._devices = ()
            elif cfg.identity_graph and not passes_through(value, cfg.identity_graph):
                self._note(device_person_of(value))
        return out, not self._devices

    def on_notify(self) -> tuple[Iterable[ForgetDevice], bool]:
        return (), self._env.now() >= self._expiry()

    def on_eof(self) -> tuple[Iterable[ForgetDevice], bool]:
        return (), not self._devices

    def notify_at_s(self) -> float | None:
        """``notify_at`` in epoch seconds."""
        return self._expiry() if self._devices else None

    def snapshot(self) -> UserDevicesRow:
        return (self._tenant_id, self._devices, self._linked_wall_s, USER_DEVICES_LAYOUT)

    def _note(self, device_key: str) -> None:
        devices = tuple(d for d in self._devices if d != device_key) + (device_key,)
        self._devices = devices[-MAX_USER_DEVICES:]
        self._linked_wall_s = self._env.now()

    def _expiry(self) -> float:
        return self._linked_wall_s + self._env.configs.for_tenant(self._tenant_id).identity_ttl_days * 86_400.0


StatefulBatchLogic.register(UserDevicesLogic)
