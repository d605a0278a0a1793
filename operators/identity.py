"""The identity step: which person each event belongs to, from the device graph (``state.device_graph``).

Keyed by (tenant, device); its output feeds the journeys step, keyed by
(tenant, person). An unlinked device is its own person and its journey is
scored here, so this step also has the journeys' outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from creditflow.config import TenantConfigs
from creditflow.events import ClosedJourney, DeadLetter, Event, PersonEvent, SuppressedEvent
from creditflow.forgotten import ForgetPerson, ForgottenIds
from creditflow.kpis import KpiDelta
from creditflow.weights import WeightsProvider
from operators.journeys import AttributionOut, split_outputs, with_key
from operators.sharded import ShardedState, sharded_stateful, value_of
from operators.state_guard import guarded_builder, guarded_keyed_step
from state.device_graph import (
    DEVICE_LAYOUT_AT,
    STATE_LAYOUT_VERSION,
    DeviceLogic,
    DeviceRow,
    ForgetDevice,
    device_person_of,
    device_state_key,
    passes_through,
)
from state.journeys import Adopt, JourneyEnv, ScoredConversion
from state.probable_links import (
    NETWORK_LAYOUT_AT,
    PROBABLE_LINKS_LAYOUT,
    NetworkKeyer,
    NetworkRow,
    ProbableLink,
    ProbableLinkEnv,
    ProbableLinkLogic,
    Sighting,
    sighting_of,
)
from state.user_devices import (
    USER_DEVICES_LAYOUT,
    USER_DEVICES_LAYOUT_AT,
    UserDevicesEnv,
    UserDevicesLogic,
    UserDevicesRow,
    named_forgets,
    user_key_of,
)


@dataclass(frozen=True)
class IdentityOut:
    to_journeys: Stream[PersonEvent | Adopt]
    """Events of devices linked to a user (and of users), and the journeys handed over at each link."""
    scored: Stream[ScoredConversion]
    touch_deltas: Stream[KpiDelta]
    duplicates: Stream[DeadLetter]
    expired: Stream[ClosedJourney]
    suppressed: Stream[SuppressedEvent]
    erased: Stream[ForgetPerson]

    @property
    def unlinked(self) -> AttributionOut:
        """What the journeys of unlinked devices produced (credited as the device's own person)."""
        return AttributionOut(
            self.scored, self.touch_deltas, self.duplicates, self.expired, self.suppressed, self.erased
        )


def identity_key(configs: TenantConfigs) -> Callable[[Event | ProbableLink | ForgetDevice], str]:
    """The device graph's key of an event, link or erasure: (tenant, device), or (tenant, user) without the graph."""

    def key(item: Event | ProbableLink | ForgetDevice) -> str:
        if isinstance(item, (ProbableLink, ForgetDevice)):
            return device_state_key(item.tenant_id, item.device_key)
        if passes_through(item, configs.for_tenant(item.tenant_id).identity_graph):
            return device_state_key(item.tenant_id, "u:" + item.user_id)
        return device_state_key(item.tenant_id, device_person_of(item))

    return key


@operator
def probable_links(
    step_id: str,
    up: Stream[Event],
    configs: TenantConfigs,
    salt_of: Callable[[str], bytes],
    now: Callable[[], float] = time.time,
    shards: ShardedState | None = None,
) -> Stream[ProbableLink]:
    """Links proposed by the network matcher (``state.probable_links``), keyed by (tenant, hashed network).

    Only events with an IP and of a ``LINK_EVENT_TYPES`` type reach the matcher; the
    IP is hashed into the key with the tenant's salt. The stateful sub-step is ``network``.
    """
    keyer = NetworkKeyer(salt_of)
    env = ProbableLinkEnv(configs, now)

    def build(resume: NetworkRow | None) -> ProbableLinkLogic:
        return ProbableLinkLogic(env, resume)

    def on_network(ev: Event) -> tuple[str, Sighting] | None:
        """``(network key, sighting)`` for an event the matcher reads (IP and user agent hashed here), else
        ``None``. The sighting, not the event, goes on to the network's key (often in another process)."""
        if not configs.for_tenant(ev.tenant_id).identity_graph:
            return None
        sighting = sighting_of(ev, salt_of(ev.tenant_id))  # None unless of a LINK_EVENT_TYPES type with a device
        if sighting is None:
            return None
        key = keyer(ev)
        return None if key is None else (key, sighting)

    keyed = op.flat_map_batch(
        "on_network", up, lambda events: [kv for ev in events if (kv := on_network(ev)) is not None]
    )  # one call per batch: op.filter_map costs a generator, a chain and a tuple per event
    guarded: Callable[[Any], Any] = guarded_builder(
        "network", PROBABLE_LINKS_LAYOUT, build, NETWORK_LAYOUT_AT
    )  # a virtual subclass
    if shards is not None:
        return sharded_stateful("network", keyed, None, guarded, shards, unkey=value_of)
    links: Stream[tuple[str, ProbableLink]] = op.stateful_batch("network", keyed, guarded)
    return op.map("unkey", links, value_of)


@operator
def resolve_identity(
    step_id: str,
    up: Stream[Event],
    configs: TenantConfigs,
    weights: WeightsProvider,
    salt_of: Callable[[str], bytes],
    now: Callable[[], float] = time.time,
    archive: bool = False,
    forgotten: ForgottenIds | None = None,
    shards: ShardedState | None = None,
) -> IdentityOut:
    """The device graph keyed by (tenant, device), with the journeys of unlinked devices.

    Deterministic links come from the events themselves; probabilistic ones from
    the network matcher (sub-operator ``links``) on the same events. A deletion
    request reaches the user's devices through the sub-operator ``erasures``
    (``state.user_devices``). The stateful sub-steps are ``device``,
    ``links.network`` and ``erasures.user_devices``; renaming any resets its state.
    ``forgotten`` is the process's suppression list (``creditflow.forgotten``).
    """
    env = JourneyEnv(configs, weights, now, archive, forgotten)

    def build(resume: DeviceRow | None) -> DeviceLogic:
        return DeviceLogic(env, resume)

    links = probable_links("links", up, configs, salt_of, now, shards)
    forgets = erasures("erasures", up, links, configs, now, shards)
    both: Stream[Event | ProbableLink | ForgetDevice] = op.merge("with_links", up, links, forgets)
    key = identity_key(configs)
    values = guarded_keyed_step(
        "device",
        both,
        key,
        STATE_LAYOUT_VERSION,
        build,
        batch=True,
        unkey=with_key,
        shards=shards,
        scrubs=_erases,
        layout_at=DEVICE_LAYOUT_AT,
    )
    onward = op.branch("onward", values, _goes_on)
    own = split_outputs(onward.falses)
    return IdentityOut(
        onward.trues, own.scored, own.touch_deltas, own.duplicates, own.expired, own.suppressed, own.erased
    )


@operator
def erasures(
    step_id: str,
    up: Stream[Event],
    links: Stream[ProbableLink],
    configs: TenantConfigs,
    now: Callable[[], float] = time.time,
    shards: ShardedState | None = None,
) -> Stream[ForgetDevice]:
    """The devices each deletion request must erase besides the key it is read under (``state.user_devices``).

    The stateful sub-step ``user_devices`` is keyed by (tenant, user) and reads
    only links and deletion requests; the keys a request names itself fan out
    without state (``named``).
    """
    env = UserDevicesEnv(configs, now)

    def build(resume: UserDevicesRow | None) -> UserDevicesLogic:
        return UserDevicesLogic(env, resume)

    def reads(item: Event | ProbableLink) -> bool:
        if isinstance(item, ProbableLink):
            return True
        return user_key_of(item) is not None and (
            item.event_type == "deletion_request" or configs.for_tenant(item.tenant_id).identity_graph
        )

    def key(item: Event | ProbableLink) -> str:
        found = user_key_of(item)
        assert found is not None, "reads() lets only keyed items through"
        return found

    items: Stream[Event | ProbableLink] = op.flat_map_batch(
        "reads", op.merge("with_links", up, links), lambda batch: [item for item in batch if reads(item)]
    )
    owned = guarded_keyed_step(
        "user_devices",
        items,
        key,
        USER_DEVICES_LAYOUT,
        build,
        batch=True,
        shards=shards,
        scrubs=_erases,
        layout_at=USER_DEVICES_LAYOUT_AT,
    )
    named = op.flat_map_batch("named", up, lambda events: _named_forgets(events, configs))
    return op.merge("forgets", owned, named)


def _named_forgets(events: list[Event], configs: TenantConfigs) -> list[ForgetDevice]:
    """``named_forgets`` of a batch: only deletion requests name any (one list per batch, not per event)."""
    return [
        forget
        for ev in events
        if ev.event_type == "deletion_request"
        for forget in named_forgets(ev, configs.for_tenant(ev.tenant_id).identity_graph)
    ]


def _goes_on(item: Any) -> bool:
    return isinstance(item, (PersonEvent, Adopt))


def _erases(item: Any) -> bool:
    """An item after which no older copy of its shard may stay on disk (``operators.sharded``)."""
    return isinstance(item, ForgetDevice) or (isinstance(item, Event) and item.event_type == "deletion_request")
