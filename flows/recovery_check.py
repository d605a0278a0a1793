"""Refuse a recovery store that does not match the running flow, never silently reset.

Bytewax keys every snapshot by the full id of the step that wrote it
(``snaps.step_id`` in each ``part-N.sqlite3`` partition of the store) and, on
resume, hands a step only the snapshots stored under its own id. A renamed
stateful step, a renamed flow id or a new stateful step therefore starts from
empty state without a word, and the old snapshots lie unused. This module
compares the store with the flow *before* the flow runs.

Which steps keep state (``stateful_step_ids``): the leaf (core) steps of the
flow that Bytewax snapshots, under the ids it writes to ``snaps``:

- every ``stateful_batch`` step, under its innermost id (``op.stateful`` and
  ``op.stateful_map`` wrap one, so such a step ``x`` is stored as
  ``x.stateful_batch``); the sharded steps (``operators.sharded``) are
  ``stateful_batch`` steps keyed by shard;
- the ``input`` step when its source is a ``FixedPartitionedSource`` (its
  partitions' resume positions; a ``DynamicSource`` keeps none);
- the ``output`` step when its sink is a ``FixedPartitionedSink`` (the
  ClickHouse sink snapshots ``None`` per partition, still a row in ``snaps``).

For the production flow (ClickHouse sink, any of our sources) that is
``creditflow.source``, the identity steps, ``creditflow.attribute.journey``,
``creditflow.dedup.seen``, ``creditflow.spend_dedup.seen``,
``creditflow.kpi.windows`` and ``creditflow.sink``.

A step without keys writes no snapshot (e.g. ``dedup.seen`` before the first
conversion), so the store alone cannot tell "no keys yet" from "renamed". The
store therefore carries a record, ``creditflow-state.json`` next to the
partitions (Bytewax's own files are never written by creditflow): the stateful
step ids of the flow that first used the store and the ``STATE_LAYOUT_VERSION``
of each step's state (``state/journeys.py``, ``state/kpi_windows.py``,
``state/conversion_dedup.py``, ...; for a sharded step also the number of
shards and the shard layout, so a store of per-key snapshots is refused). ``record_store_layout`` writes it when the
store is first used, and rewrites it only while the store holds no snapshots.

``check_recovery_store`` rules, with F the flow's stateful step ids, S the step
ids found in ``snaps`` and R the record:

- S empty (new store, or no snapshot was ever taken): passes, nothing to lose.
- (a) a step id in S but not in F: refused (a renamed or removed step, or the
  store of another flow id; its snapshots would be ignored).
- (b) a step in F but not in S: passes only when R lists it (the step simply
  has no keys yet); otherwise refused (a new or renamed step would start
  empty). A store without a record (made before creditflow kept one) must
  therefore hold snapshots of every stateful step of the flow.
- (c) a step in both F and R whose recorded layout differs from the code's
  ``STATE_LAYOUT_VERSION``: refused, whether or not it has snapshots yet,
  unless the code still reads that layout (the state module's
  ``READABLE_LAYOUTS``: journeys read layout 5 and upgrade it as they load).

A step of R that is in neither F nor S had no state and is not reported by
itself (a rename of it shows up under (b)). The per-snapshot layout check of
``operators.state_guard`` still runs when the flow loads state.

>>> from bytewax.testing import TestingSink, TestingSource
>>> from flows.attribution import FlowSettings, build_flow
>>> for step in sorted(stateful_step_ids(build_flow(TestingSource([]), TestingSink([]), FlowSettings()))):
...     print(step)
creditflow.attribute.journey
creditflow.dedup.seen
creditflow.identity.device
creditflow.identity.erasures.user_devices
creditflow.identity.links.network
creditflow.kpi.windows
creditflow.source
creditflow.spend_dedup.seen
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import FixedPartitionedSink

import state.conversion_dedup as conversion_dedup_state
import state.device_graph as device_graph_state
import state.event_dedup as event_dedup_state
import state.journeys as journeys_state
import state.kpi_windows as kpi_windows_state
import state.probable_links as probable_links_state
import state.user_devices as user_devices_state
from creditflow.errors import CreditflowError
from operators.sharded import SHARDS
from state.shard_store import SHARD_LAYOUT

RECORD_NAME = "creditflow-state.json"
"""The store's record of the steps and state layouts it was made for, next to ``part-*.sqlite3``."""

RECORD_FORMAT = 1

STATE_OF_STEP: dict[str, str] = {
    "identity.device": "state.device_graph",
    "identity.links.network": "state.probable_links",
    "identity.erasures.user_devices": "state.user_devices",
    "attribute.journey": "state.journeys",
    "kpi.windows": "state.kpi_windows",
    "dedup.seen": "state.conversion_dedup",
    "spend_dedup.seen": "state.event_dedup",
}
"""Stateful step id (after the flow id, as stored in ``snaps``) -> module whose ``STATE_LAYOUT_VERSION`` it uses."""

SHARDED_STEPS = frozenset(STATE_OF_STEP) - {"kpi.windows"}
"""Steps keeping their keys in shards (``operators.sharded``): their recorded layout names the shards too."""


class StateCompatibilityError(CreditflowError):
    """The recovery store was written for other stateful steps or state layouts than the running flow's."""

    def __init__(self, message: str, steps: list[str]) -> None:
        super().__init__(message)
        self.steps = steps
        """The step ids at fault, sorted."""


_STATE_MODULES = {
    "state.device_graph": device_graph_state,
    "state.probable_links": probable_links_state,
    "state.user_devices": user_devices_state,
    "state.journeys": journeys_state,
    "state.kpi_windows": kpi_windows_state,
    "state.conversion_dedup": conversion_dedup_state,
    "state.event_dedup": event_dedup_state,
}


def state_layouts() -> dict[str, int]:
    """The state layout versions of this code, read now (``state module -> STATE_LAYOUT_VERSION``)."""
    return {name: module.STATE_LAYOUT_VERSION for name, module in _STATE_MODULES.items()}


def _leaf_steps(step: Any) -> Iterator[Any]:
    subs = list(getattr(step, "substeps", []))
    if not subs:
        yield step
    for sub in subs:
        yield from _leaf_steps(sub)


def _keeps_state(step: Any) -> bool:
    kind = type(step).__name__
    if kind == "stateful_batch":
        return True
    if kind == "input":
        return isinstance(getattr(step, "source", None), FixedPartitionedSource)
    if kind == "output":
        return isinstance(getattr(step, "sink", None), FixedPartitionedSink)
    return False


def stateful_step_ids(flow: Dataflow) -> set[str]:
    """Full ids of the flow's steps that Bytewax snapshots, exactly as they appear in ``snaps.step_id``."""
    return {step.step_id for sub in flow.substeps for step in _leaf_steps(sub) if _keeps_state(step)}


def _partitions(recovery_dir: Path) -> list[Path]:
    return sorted(recovery_dir.glob("part-*.sqlite3")) if recovery_dir.is_dir() else []


def _connect_read_only(part: Path) -> sqlite3.Connection:
    # Bytewax keeps its partitions in WAL mode. Without a ``-wal`` file (closed
    # cleanly) everything is in the main file and ``immutable=1`` reads it
    # without creating ``-wal``/``-shm`` files; with one (a crashed or running
    # flow) the newest snapshots may be only there, so read through it (mode=ro).
    # The checks run before any flow process starts (flows/run.py), so nothing writes meanwhile:
    # no private copy is needed (state.bytewax_store.open_current_copy, ~10x the cost here).
    wal = part.with_name(part.name + "-wal")
    params = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    return sqlite3.connect(f"{part.resolve().as_uri()}?{params}", uri=True)


def stored_step_ids(recovery_dir: Path) -> set[str]:
    """Distinct ``snaps.step_id`` across all partitions of the store (empty for a missing or new store).

    Partitions are opened read-only; the store is never modified.
    """
    found: set[str] = set()
    for part in _partitions(Path(recovery_dir)):
        try:
            with closing(_connect_read_only(part)) as db:
                found.update(row[0] for row in db.execute("SELECT DISTINCT step_id FROM snaps"))
        except sqlite3.Error as exc:
            raise CreditflowError(f"recovery store partition {part} is not a readable Bytewax store: {exc}") from exc
    return found


def _record_path(recovery_dir: Path) -> Path:
    return Path(recovery_dir) / RECORD_NAME


def _read_record(recovery_dir: Path) -> dict[str, dict[str, Any]] | None:
    """The recorded steps (``step id -> {"state": module|None, "layout": int|None}``), None without a record."""
    path = _record_path(recovery_dir)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        steps = data["steps"]
        if data.get("format") != RECORD_FORMAT or not isinstance(steps, dict):
            raise ValueError(f"unknown record format {data.get('format')!r}")
        return {str(k): dict(v) for k, v in steps.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CreditflowError(f"cannot read {path}: {exc}; it records what the recovery store was made for") from exc


def _flow_id_of(step_id: str) -> str:
    return step_id.split(".", 1)[0]


def _state_of(step_id: str) -> str | None:
    return STATE_OF_STEP.get(step_id.split(".", 1)[1]) if "." in step_id else None


def _layout_text(step_id: str, layout: int | None) -> int | str | None:
    if layout is not None and step_id.split(".", 1)[1] in SHARDED_STEPS:
        return f"{layout} in {SHARDS} shards (shard layout {SHARD_LAYOUT})"
    return layout


def _expected(flow: Dataflow) -> dict[str, dict[str, Any]]:
    layouts = state_layouts()
    expected: dict[str, dict[str, Any]] = {}
    for step_id in sorted(stateful_step_ids(flow)):
        state = _state_of(step_id)
        expected[step_id] = {"state": state, "layout": _layout_text(step_id, layouts[state] if state else None)}
    return expected


def _readable(step_id: str, state: str | None) -> list[int | str | None]:
    """The recorded layouts of ``step_id`` this code resumes from: its own and the older ones its state reads."""
    current = state_layouts()[state] if state else None
    older = getattr(_STATE_MODULES[state], "READABLE_LAYOUTS", ()) if state else ()
    return [_layout_text(step_id, layout) for layout in (current, *older)]


def _ways_out(recovery_dir: Path) -> str:
    return (
        "Nothing was changed. Either migrate the store with a creditflow release that knows both the old and the "
        "new steps / state layouts, or start fresh explicitly with `creditflow run ... --fresh-state`, which moves "
        f"this store aside to {recovery_dir}.old-<timestamp> (nothing is deleted) and starts every stateful step empty."
    )


def check_recovery_store(flow: Dataflow, recovery_dir: Path) -> None:
    """Raise ``StateCompatibilityError`` if resuming ``flow`` from this store would lose or misread state.

    The rules are in the module docstring. A missing or empty store passes.
    """
    recovery_dir = Path(recovery_dir)
    stored = stored_step_ids(recovery_dir)
    if not stored:
        return
    expected = _expected(flow)
    record = _read_record(recovery_dir)
    lines: list[str] = []
    at_fault: set[str] = set()

    def report(steps: list[str], text: str) -> None:
        if steps:
            at_fault.update(steps)
            lines.append(f"  - {text}: {', '.join(repr(s) for s in steps)}")

    unknown = sorted(stored - expected.keys())
    for stored_flow in sorted({_flow_id_of(s) for s in unknown}):
        steps = [s for s in unknown if _flow_id_of(s) == stored_flow]
        if stored_flow == flow.flow_id:
            report(steps, "snapshots of steps this flow does not have (renamed or removed steps; ignored on resume)")
        else:
            report(
                steps,
                f"snapshots written by flow id {stored_flow!r}, this flow is {flow.flow_id!r} (ignored on resume)",
            )
    missing = [s for s in expected if s not in stored and (record is None or s not in record)]
    if record is not None:
        report(missing, "stateful steps the store was not made for (new or renamed; they would start empty)")
    else:
        report(
            missing,
            f"stateful steps without snapshots in a store with no {RECORD_NAME} to tell 'no keys yet' from "
            "'new or renamed' (they would start empty)",
        )
    for step_id, want in expected.items():
        recorded = record.get(step_id) if record is not None else None
        if recorded is not None and recorded.get("layout") not in _readable(step_id, want["state"]):
            report(
                [step_id],
                f"stored with state layout {recorded.get('layout')} of {want['state']}, "
                f"this code has layout {want['layout']}",
            )
    if lines:
        body = "\n".join(lines)
        raise StateCompatibilityError(
            f"recovery store {recovery_dir} does not match this flow; resuming would silently reset or misread "
            f"state:\n{body}\n{_ways_out(recovery_dir)}",
            sorted(at_fault),
        )


def record_store_layout(flow: Dataflow, recovery_dir: Path) -> Path:
    """Record the flow's stateful steps and state layouts in the store (``creditflow-state.json``); return its path.

    Checks the store first (``check_recovery_store``), so a mismatching record is
    never overwritten. Writes when the store has no record yet (first use, or a
    store made before records existed) or holds no snapshots; otherwise the
    record of the store's first use is kept. The write is atomic.
    """
    recovery_dir = Path(recovery_dir)
    check_recovery_store(flow, recovery_dir)
    path = _record_path(recovery_dir)
    expected = _expected(flow)
    record = _read_record(recovery_dir)
    if record == expected or (record is not None and stored_step_ids(recovery_dir)):
        return path
    recovery_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "format": RECORD_FORMAT,
        "flow_id": flow.flow_id,
        "steps": expected,
        "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "note": "written by creditflow (flows/recovery_check.py): the stateful steps and state layouts this "
        "Bytewax recovery store holds; compared before every resume",
    }
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def move_store_aside(recovery_dir: Path) -> Path:
    """Rename the store to ``<dir>.old-<UTC timestamp>`` (nothing is deleted) and return the new path.

    The caller then creates a new, empty store at ``recovery_dir``.
    """
    recovery_dir = Path(recovery_dir)
    if not recovery_dir.exists():
        raise CreditflowError(f"no recovery store at {recovery_dir} to move aside")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = recovery_dir.with_name(f"{recovery_dir.name}.old-{stamp}")
    n = 1
    while target.exists():
        target = recovery_dir.with_name(f"{recovery_dir.name}.old-{stamp}-{n}")
        n += 1
    recovery_dir.rename(target)
    return target


def stored_source_partitions(recovery_dir: Path, step_id: str) -> set[str]:
    """Partitions of the source step ``step_id`` that the store holds positions for (read-only)."""
    found: set[str] = set()
    for part in _partitions(Path(recovery_dir)):
        try:
            with closing(_connect_read_only(part)) as db:
                rows = db.execute("SELECT DISTINCT state_key FROM snaps WHERE step_id = ?", (step_id,))
                found.update(row[0] for row in rows)
        except sqlite3.Error as exc:
            raise CreditflowError(f"recovery store partition {part} is not a readable Bytewax store: {exc}") from exc
    return found


def check_source_partitions(recovery_dir: Path, step_id: str, partitions: list[str]) -> None:
    """Refuse a store holding positions of source partitions this run's source does not have.

    Bytewax would stop with a bare routing error; this names the partitions and the way out.
    """
    missing = stored_source_partitions(recovery_dir, step_id) - set(partitions)
    if missing:
        raise StateCompatibilityError(
            f"recovery store {recovery_dir} holds positions of source partitions {sorted(missing)} that this "
            f"run's --source does not have (it has {sorted(partitions)}). Run with the same --source as the "
            f"store was written with. {_ways_out(Path(recovery_dir))}",
            [step_id],
        )
