"""Structural guard: every stream the flow produces is consumed.

Bytewax silently discards a stream nobody reads, so a branch left unconnected
(e.g. a dead-letter output) would drop items without a trace. This test walks
the top-level steps of the built flow and fails on any such stream.
"""

from __future__ import annotations

from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource

from flows.attribution import FlowSettings, build_flow


def dangling_streams(flow: Dataflow) -> list[str]:
    produced: dict[str, str] = {}
    consumed: set[str] = set()
    for step in flow.substeps:
        for name in step.dwn_names:
            port = getattr(step, name)
            produced[port.stream_id] = f"{step.step_id}.{name}"
        for name in step.ups_names:
            port = getattr(step, name)
            consumed.update(port.stream_ids.values() if hasattr(port, "stream_ids") else [port.stream_id])
    return sorted(where for stream, where in produced.items() if stream not in consumed)


def test_attribution_flow_consumes_every_stream_it_produces() -> None:
    flow = build_flow(TestingSource([]), TestingSink([]), FlowSettings(), archive=TestingSink([]))
    assert dangling_streams(flow) == []


def test_without_an_archive_only_the_archive_streams_are_unread() -> None:
    # The journeys step then emits no closed journey at all (JourneyEnv.archive is off).
    flow = build_flow(TestingSource([]), TestingSink([]), FlowSettings())
    assert dangling_streams(flow) == [
        "creditflow.attribute.expired",
        "creditflow.dedup.journeys",
        "creditflow.identity.expired",
    ]


def test_the_guard_notices_an_unconnected_branch() -> None:
    import bytewax.operators as op

    flow = Dataflow("probe")
    split = op.branch("split", op.input("in", flow, TestingSource([1, 2])), lambda x: x > 1)
    op.output("out", split.trues, TestingSink([]))
    assert dangling_streams(flow) == ["probe.split.falses"]


def test_every_event_type_reaches_the_identity_step_or_ad_spend() -> None:
    # build_flow sends the events that are not identity events to ad-spend de-duplication: a new event type
    # must be added to one side or the other, not counted as spend by accident.
    from creditflow.events import EVENT_TYPES, IDENTITY_EVENT_TYPES

    assert EVENT_TYPES - IDENTITY_EVENT_TYPES == {"ad_spend"}
