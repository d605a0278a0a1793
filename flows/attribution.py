"""The attribution dataflow: raw records in, credit, conversions, KPIs and dead letters out.

    source -> decode_events --errs---------------------------------------------+
                  | oks -> not_forgotten --erased persons' events (counted)--------+
                  +--> resolve_identity --linked--> attribute --+              |
                  |    (device graph,   --unlinked devices' ----+-> dedupe_conversions --> sink
                  |     network matcher, journeys               credits, conversions --+
                  |     user devices)  (dups, suppressed, erasures) ---------------------+
                  +--> kpi deltas (touches, ad spend) -------------+-> kpi_windows       |
                                                                     rows, late ---------+

Every step id below is part of the recovery contract: renaming a stateful
step (``identity.device``, ``identity.links.network``,
``identity.erasures.user_devices``, ``attribute.journey``, ``dedup.seen``,
``spend_dedup.seen``, ``kpi.windows``) or the flow id resets its state;
``flows/recovery_check.py`` refuses a store written for other step ids.

Erasure (``deletion_request``): the keyed steps drop the person's state and
emit a ``ForgetPerson`` per erased key (``creditflow.forgotten``); the sink
deletes the person's rows and records the key's hash, the archive drops and
rewrites the person's journeys.

>>> from bytewax.testing import TestingSource, TestingSink, run_main
>>> from creditflow.events import RawRecord, SourcePosition
>>> raw = [b'{"event_id":"c1","tenant_id":"t","event_type":"click","timestamp":1767225600000,'
...        b'"user_id":"u","channel":"email"}',
...        b'{"event_id":"v1","tenant_id":"t","event_type":"conversion","timestamp":1767225660000,'
...        b'"user_id":"u","conversion":{"conversion_id":"o1","value":10}}']
>>> recs = [RawRecord(r, SourcePosition("test", "p", str(i))) for i, r in enumerate(raw)]
>>> out = []
>>> run_main(build_flow(TestingSource(recs), TestingSink(out), FlowSettings()))
>>> sorted({(r.model, r.channel, r.credit) for r in out if r.table == "attribution_credits"})[:2]
[('data_driven', 'email', 1.0), ('first_touch', 'email', 1.0)]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import FixedPartitionedSink, Sink

from creditflow.config import TenantConfigs
from creditflow.events import (
    IDENTITY_EVENT_TYPES,
    ClosedJourney,
    DeadLetter,
    Event,
    RawRecord,
    SinkRow,
    SuppressedEvent,
)
from creditflow.forgotten import ForgetPerson, ForgottenIds
from creditflow.kpis import KpiDelta, delta_of
from creditflow.pii import PiiHasher
from creditflow.weights import NoWeights, WeightsProvider
from operators.decode import decode_events
from operators.dedup import dedupe_conversions, dedupe_spend
from operators.identity import resolve_identity
from operators.journeys import attribute
from operators.kpi import kpi_windows
from operators.parcels import parcels
from operators.progress import ProgressCounter
from operators.sharded import ShardedState
from operators.weights_log import weights_rows
from state.journeys import suppressed
from state.kpi_windows import WindowSettings

FLOW_ID = "creditflow"
"""Part of the recovery contract: changing it starts every step from empty state."""


@dataclass(frozen=True)
class FlowSettings:
    """Everything the attribution flow needs besides its source and sink."""

    configs: TenantConfigs = field(default_factory=TenantConfigs)
    windows: WindowSettings = field(default_factory=WindowSettings)
    weights: WeightsProvider = field(default_factory=NoWeights)
    progress: ProgressCounter | None = None
    pii: PiiHasher = field(default_factory=PiiHasher.unkeyed)
    """Hashes emails and phones per tenant and scrubs dead letters; production runs pass a keyed one."""
    forgotten: ForgottenIds | None = None
    """The suppression list of erased persons (``creditflow.forgotten``), as loaded from the durable one when
    the run starts; ``None``: an empty list salted by ``pii``."""
    shards: ShardedState = field(default_factory=ShardedState)
    """Where the keyed steps keep their shards' state (``operators.sharded``); production runs give a
    directory inside the recovery directory. Without one, snapshots carry each shard's whole state."""


def _spend_delta(event: Event, configs: TenantConfigs) -> KpiDelta | None:
    return delta_of(event, configs.for_tenant(event.tenant_id).kpi_volume_source)


def build_flow(
    source: Source[Any],
    sink: Sink[Any],
    settings: FlowSettings,
    adapt: Callable[[Any], RawRecord] | None = None,
    archive: Sink[Any] | None = None,
    weights_log: Source[RawRecord] | None = None,
) -> Dataflow:
    """Wire the attribution flow between ``source`` and ``sink``.

    The sink receives every ``SinkRow`` (credit, conversion, KPI and dead-letter
    rows). A ``FixedPartitionedSink`` such as the ClickHouse sink receives them
    as parcels (``operators.parcels``), ``(table, [row, ...])`` per batch, so
    its writer's ``write_batch`` gets lists of rows. ``adapt`` turns a
    source's own items (e.g. Kafka messages) into ``RawRecord``. ``archive``,
    if given, receives every closed journey (``ClosedJourney``: converted once
    credited, or expired), as ``(tenant_id, [journey, ...])`` parcels for a
    ``FixedPartitionedSink`` such as ``sinks.parquet_archive.ParquetArchiveSink``.
    ``weights_log``, if given, is read as a second input (the ``weights:log``
    Redis stream, ``creditflow.weights_store``): its records become
    ``model_weights`` rows of the same sink.
    """
    flow = Dataflow(FLOW_ID)
    raw = op.input("source", flow, source)
    if adapt is not None:
        raw = op.map("adapt", raw, adapt)
    decoded = decode_events("decode", raw, settings.configs, progress=settings.progress, pii=settings.pii)

    # Erased persons stay out (counted): the list this process knows now; the keyed steps refuse the rest.
    forgotten = settings.forgotten if settings.forgotten is not None else ForgottenIds(settings.pii.tenant_salt)
    live = op.branch(
        "not_forgotten",
        decoded.oks,
        lambda ev: ev.event_type == "deletion_request" or not forgotten.names_forgotten(ev),
    )
    refused = op.map("forgotten_events", live.falses, lambda ev: suppressed(ev, "forgotten"))
    # A bad record naming an erased person is counted as suppressed, not kept as a dead letter with its payload.
    letters = op.branch("letters_not_forgotten", decoded.errs, lambda dl: not _names_forgotten(forgotten, dl))
    refused_letters = op.map("forgotten_letters", letters.falses, _suppressed_letter)

    # A device's events travel one path, in order: the device graph (keyed by device) credits an
    # unlinked device itself and sends a linked one's events, and its journey at the link, to the person.
    by_kind = op.branch("person_events", live.trues, lambda ev: ev.event_type in IDENTITY_EVENT_TYPES)
    person_events, ad_spend = by_kind.trues, by_kind.falses  # every other event type is ad spend
    identity = resolve_identity(
        "identity",
        person_events,
        settings.configs,
        settings.weights,
        settings.pii.tenant_salt,
        archive=archive is not None,
        forgotten=forgotten,
        shards=settings.shards,
    )
    persons = attribute(
        "attribute",
        identity.to_journeys,
        settings.configs,
        settings.weights,
        archive=archive is not None,
        forgotten=forgotten,
        shards=settings.shards,
    )
    devices = identity.unlinked
    scored = op.merge("scored", devices.scored, persons.scored)
    credited = dedupe_conversions("dedup", scored, settings.configs, shards=settings.shards)

    # Touches are counted by their journey, after de-duplication; ad spend here, after its own.
    spend = dedupe_spend("spend_dedup", ad_spend, shards=settings.shards)
    spend_deltas = op.filter_map("kpi_deltas", spend.firsts, lambda ev: _spend_delta(ev, settings.configs))
    kpi_in = op.merge("kpi_in", spend_deltas, devices.touch_deltas, persons.touch_deltas, credited.kpi_deltas)
    kpis = kpi_windows("kpi", kpi_in, settings.windows)

    extra: list[Any] = []
    if weights_log is not None:
        extra.append(weights_rows("weights_log", op.input("weights_source", flow, weights_log)))
    rows: Any = op.merge(
        "rows",
        *extra,
        credited.credits,
        credited.conversions,
        kpis.rows,
        letters.trues,
        refused_letters,
        kpis.late,
        devices.duplicates,
        persons.duplicates,
        devices.suppressed,
        persons.suppressed,
        refused,
        devices.erased,
        persons.erased,
        credited.duplicates,
        spend.duplicates,
    )
    if isinstance(sink, FixedPartitionedSink):
        rows = op.flat_map_batch("route", rows, _route)
    op.output("sink", rows, sink)
    if archive is not None:
        closed: Any = op.merge(
            "closed_journeys", credited.journeys, devices.expired, persons.expired, devices.erased, persons.erased
        )
        if isinstance(archive, FixedPartitionedSink):
            closed = op.flat_map_batch("route_archive", closed, _route_journeys)
        op.output("archive", closed, archive)
    return flow


def _names_forgotten(forgotten: ForgottenIds, letter: DeadLetter) -> bool:
    return forgotten.names_forgotten_raw(letter.tenant_id, letter.raw)


def _suppressed_letter(letter: DeadLetter) -> SuppressedEvent:
    """The count-only trace of a bad record of an erased person (keyed like the dead letter it replaces)."""
    where = f"{letter.position.source}/{letter.position.partition}/{letter.position.offset}"
    key = hashlib.blake2b(where.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return SuppressedEvent(letter.tenant_id, "forgotten", letter.event_type or "unknown", key, 0)


def _route_journeys(journeys: list[ClosedJourney | ForgetPerson]) -> list[tuple[str, list[Any]]]:
    """A batch's journeys as parcels (``operators.parcels``) keyed by tenant: one pickle each if they cross."""
    return parcels(journeys, _tenant_of)


def _tenant_of(item: ClosedJourney | ForgetPerson) -> str:
    return item.tenant_id


def _route(rows: list[SinkRow]) -> list[tuple[str, list[SinkRow]]]:
    """A batch's rows as parcels keyed by table (``operators.parcels``): one pickle each if they cross."""
    return parcels(rows, _table_of)


def _table_of(row: SinkRow) -> str:
    return row.table
