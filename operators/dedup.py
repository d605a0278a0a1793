"""De-duplicate scored conversions by tenant x conversion_id, across persons."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from creditflow.config import TenantConfigs
from creditflow.events import ClosedJourney, ConversionRow, CreditRow, DeadLetter, Event
from creditflow.kpis import KEY_SEP, KpiDelta
from operators.sharded import ShardedState
from operators.state_guard import guarded_keyed_step
from state.conversion_dedup import (
    SEEN_CONVERSION_LAYOUT_AT,
    STATE_LAYOUT_VERSION,
    ConversionDedupLogic,
    SeenConversionRow,
)
from state.event_dedup import SEEN_EVENT_LAYOUT_AT, SeenEventRow, SpendDedupLogic
from state.event_dedup import STATE_LAYOUT_VERSION as SPEND_LAYOUT_VERSION
from state.journeys import ScoredConversion


@dataclass(frozen=True)
class DedupOut:
    credits: Stream[CreditRow]
    conversions: Stream[ConversionRow]
    kpi_deltas: Stream[KpiDelta]
    duplicates: Stream[DeadLetter]
    journeys: Stream[ClosedJourney]
    """The credited path of each first copy (when the journeys step archives)."""


def conversion_key(sc: ScoredConversion) -> str:
    return f"{sc.conversion.tenant_id}{KEY_SEP}{sc.conversion.conversion_id}"


@operator
def dedupe_conversions(
    step_id: str,
    up: Stream[ScoredConversion],
    configs: TenantConfigs,
    now: Callable[[], float] = time.time,
    shards: ShardedState | None = None,
) -> DedupOut:
    """The first scored copy of each conversion id becomes rows; later copies become dead letters."""

    def build(resume: SeenConversionRow | None) -> ConversionDedupLogic:
        return ConversionDedupLogic(configs, resume, now)

    values = guarded_keyed_step(
        "seen", up, conversion_key, STATE_LAYOUT_VERSION, build, shards=shards, layout_at=SEEN_CONVERSION_LAYOUT_AT
    )
    credit_rows = op.branch("credits", values, lambda x: isinstance(x, CreditRow))
    conversions = op.branch("conversions", credit_rows.falses, lambda x: isinstance(x, ConversionRow))
    deltas = op.branch("kpi_deltas", conversions.falses, lambda x: isinstance(x, KpiDelta))
    journeys = op.branch("journeys", deltas.falses, lambda x: isinstance(x, ClosedJourney))
    return DedupOut(  # type: ignore[arg-type]
        credit_rows.trues, conversions.trues, deltas.trues, journeys.falses, journeys.trues
    )


@dataclass(frozen=True)
class SpendDedupOut:
    firsts: Stream[Event]
    duplicates: Stream[DeadLetter]


@operator
def dedupe_spend(
    step_id: str, up: Stream[Event], now: Callable[[], float] = time.time, shards: ShardedState | None = None
) -> SpendDedupOut:
    """The first ad-spend report of each event id passes; copies become ``duplicate_event`` dead letters."""

    def build(resume: SeenEventRow | None) -> SpendDedupLogic:
        return SpendDedupLogic(resume, now)

    values = guarded_keyed_step(
        "seen",
        up,
        lambda ev: f"{ev.tenant_id}{KEY_SEP}{ev.event_id}",
        SPEND_LAYOUT_VERSION,
        build,
        shards=shards,
        layout_at=SEEN_EVENT_LAYOUT_AT,
    )
    split = op.branch("split", values, lambda x: isinstance(x, Event))
    return SpendDedupOut(split.trues, split.falses)  # type: ignore[arg-type]
