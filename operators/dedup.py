"""De-duplicate conversions by tenant x conversion_id, across persons."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from creditflow.config import TenantConfigs
from creditflow.events import DeadLetter, Event
from creditflow.kpis import KEY_SEP
from operators.state_guard import guarded_builder
from state.conversion_dedup import STATE_LAYOUT_VERSION, ConversionDedupLogic, SeenConversion


@dataclass(frozen=True)
class DedupOut:
    firsts: Stream[Event]
    duplicates: Stream[DeadLetter]


def conversion_key(ev: Event) -> str:
    assert ev.conversion is not None
    return f"{ev.tenant_id}{KEY_SEP}{ev.conversion.conversion_id}"


@operator
def dedupe_conversions(
    step_id: str, up: Stream[Event], configs: TenantConfigs, now: Callable[[], float] = time.time
) -> DedupOut:
    """First event of each conversion id passes; later copies become ``duplicate_conversion`` dead letters."""
    keyed = op.key_on("key", up, conversion_key)

    def build(resume: SeenConversion | None) -> ConversionDedupLogic:
        return ConversionDedupLogic(configs, resume, now)

    out = op.stateful("seen", keyed, guarded_builder("seen", STATE_LAYOUT_VERSION, build))
    values = op.map("unkey", out, lambda kv: kv[1])
    split = op.branch("split", values, lambda x: isinstance(x, Event))
    return DedupOut(split.trues, split.falses)  # type: ignore[arg-type]
