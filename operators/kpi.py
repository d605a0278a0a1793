"""Event-time tumbling KPI windows per tenant x channel x campaign."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from creditflow.events import DeadLetter, KpiRow
from creditflow.kpis import KpiDelta
from operators.state_guard import guarded_keyed_step
from state.kpi_windows import (
    STATE_LAYOUT_VERSION,
    KpiWindowLogic,
    KpiWindowState,
    PartitionClocks,
    WindowSettings,
)


@dataclass(frozen=True)
class KpiOut:
    rows: Stream[KpiRow]
    late: Stream[DeadLetter]


@operator
def kpi_windows(
    step_id: str,
    up: Stream[KpiDelta],
    settings: WindowSettings,
    now: Callable[[], float] = time.time,
) -> KpiOut:
    """Closed windows as ``KpiRow``; events too late for their window as dead letters."""

    shared = PartitionClocks()  # one per worker process: every key of the step sees every partition's clock

    def build(resume: KpiWindowState | None) -> KpiWindowLogic:
        return KpiWindowLogic(settings, resume, now, shared)

    values = guarded_keyed_step("windows", up, lambda d: d.key, STATE_LAYOUT_VERSION, build, batch=True)
    split = op.branch("split", values, lambda x: isinstance(x, KpiRow))
    return KpiOut(split.trues, split.falses)  # type: ignore[arg-type]
