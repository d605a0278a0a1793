"""Keyed journeys and credit at each conversion, as one Bytewax operator."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from creditflow.config import TenantConfigs
from creditflow.events import ClosedJourney, DeadLetter, PersonEvent, SuppressedEvent
from creditflow.forgotten import ForgetPerson, ForgottenIds
from creditflow.kpis import KEY_SEP, KpiDelta
from creditflow.weights import WeightsProvider
from operators.sharded import ShardedState
from operators.state_guard import guarded_keyed_step
from state.journeys import (
    JOURNEY_LAYOUT_AT,
    READABLE_LAYOUTS,
    STATE_LAYOUT_VERSION,
    Adopt,
    ExpiredJourney,
    JourneyEnv,
    JourneyLogic,
    JourneyRow,
    ScoredConversion,
)


@dataclass(frozen=True)
class AttributionOut:
    scored: Stream[ScoredConversion]
    """One item per credited conversion: its row, credit rows and KPI deltas."""
    touch_deltas: Stream[KpiDelta]
    """KPI increments of the person's (de-duplicated) impressions and clicks."""
    duplicates: Stream[DeadLetter]
    """Conversions and touches this person had already sent with the same id."""
    expired: Stream[ClosedJourney]
    """Journeys that closed without a conversion (idle TTL); empty unless ``archive``."""
    suppressed: Stream[SuppressedEvent]
    """Events not kept or credited because the person has not consented or was erased (counted only)."""
    erased: Stream[ForgetPerson]
    """Persons a deletion request erased here: the sinks delete their rows and list their hash."""


def person_key(item: PersonEvent | Adopt) -> str:
    tenant_id = item.event.tenant_id if isinstance(item, PersonEvent) else item.tenant_id
    return f"{tenant_id}{KEY_SEP}{item.person_id}"


def with_key(kv: tuple[str, Any]) -> Any:
    """A journey's output, an idle-expired journey completed with its tenant and person from the key."""
    key, value = kv
    if isinstance(value, ExpiredJourney):
        tenant_id, _, person_id = key.partition(KEY_SEP)
        return value.closed(tenant_id, person_id)
    return value


def split_outputs(values: Stream[Any]) -> AttributionOut:
    """Sort a journey logic's outputs by kind (sub-steps ``split``, ``touch_deltas``, ``expired``, ``suppressed``,
    ``forgotten``)."""
    split = op.branch("split", values, lambda x: isinstance(x, ScoredConversion))
    rest = op.branch("touch_deltas", split.falses, lambda x: isinstance(x, KpiDelta))
    expired = op.branch("expired", rest.falses, lambda x: isinstance(x, ClosedJourney))
    suppressed = op.branch("suppressed", expired.falses, lambda x: isinstance(x, SuppressedEvent))
    forgotten = op.branch("forgotten", suppressed.falses, lambda x: isinstance(x, ForgetPerson))
    return AttributionOut(
        split.trues,
        rest.trues,
        forgotten.falses,  # type: ignore[arg-type]
        expired.trues,
        suppressed.trues,
        forgotten.trues,
    )


@operator
def attribute(
    step_id: str,
    up: Stream[PersonEvent | Adopt],
    configs: TenantConfigs,
    weights: WeightsProvider,
    now: Callable[[], float] = time.time,
    archive: bool = False,
    forgotten: ForgottenIds | None = None,
    shards: ShardedState | None = None,
) -> AttributionOut:
    """Journeys keyed by tenant and person; credit rows at every conversion.

    ``up`` carries the persons' events and the journeys of devices just linked
    to them (``Adopt``, from the identity step). With ``archive``, every closed
    journey is emitted too: a converting one inside its ``ScoredConversion`` (so
    de-duplication keeps or drops it with the conversion), an unconverted one
    on ``expired``. ``forgotten`` is the process's suppression list
    (``creditflow.forgotten``), shared with the decoder.

    The stateful sub-step is ``journey``; renaming it (or this step) would
    silently reset every journey, so the state guard refuses snapshots of
    another layout instead.
    """

    env = JourneyEnv(configs, weights, now, archive, forgotten)  # shared by every key's logic

    def build(resume: JourneyRow | None) -> JourneyLogic:
        return JourneyLogic(env, resume)

    values = guarded_keyed_step(
        "journey",
        up,
        person_key,
        STATE_LAYOUT_VERSION,
        build,
        batch=True,
        unkey=with_key,
        shards=shards,
        scrubs=_erases,
        layout_at=JOURNEY_LAYOUT_AT,
        readable=READABLE_LAYOUTS,
    )
    return split_outputs(values)


def _erases(item: PersonEvent | Adopt) -> bool:
    return isinstance(item, PersonEvent) and item.event.event_type == "deletion_request"
