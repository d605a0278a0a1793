"""Refuse to resume from a snapshot whose state layout the running code does not know.

Bytewax hands a stateful step whatever was snapshotted under its step id. If
the state's shape changed between releases, unpickled old state would fail in
odd places or, worse, be misread. Every state carries a ``layout`` number (an
attribute, or for a snapshot row, a plain tuple, the field at ``layout_at``); a
mismatch stops the flow with a message naming the step.

>>> build = guarded_builder("seen", 2, lambda resume: resume, layout_at=0)
>>> build((2, "kept"))
(2, 'kept')
>>> build((1, "old"))
Traceback (most recent call last):
...
operators.state_guard.StateLayoutError: stateful step 'seen': snapshot has state layout 1, this code expects 2. ...
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream

from creditflow.errors import CreditflowError
from operators.parcels import UnparcelLogic, parcels
from operators.sharded import ShardedState, sharded_stateful, value_of

S = TypeVar("S")
L = TypeVar("L")


class StateLayoutError(CreditflowError):
    """A snapshot was written by an incompatible state layout."""


def guarded_builder(
    step: str,
    layout: int,
    build: Callable[[S | None], L],
    layout_at: int | None = None,
    readable: Collection[int] = (),
) -> Callable[[S | None], L]:
    """Wrap a stateful builder so that a resume state of another layout is refused.

    ``layout_at``: the states are rows (tuples) holding their layout at this index;
    a state that is not a tuple (a snapshot of an earlier release) is read by attribute.
    ``readable``: older layouts ``build`` upgrades itself, let through too.

    >>> guarded_builder("journey", 6, lambda resume: resume, layout_at=0, readable=(5,))((5, "upgraded by build"))
    (5, 'upgraded by build')
    """
    accepted = (layout, *readable)

    def builder(resume: S | None) -> L:
        if resume is not None:
            if layout_at is not None and isinstance(resume, tuple):
                found = resume[layout_at] if len(resume) > layout_at else None
            else:
                found = getattr(resume, "layout", None)
            if found not in accepted:
                msg = (
                    f"stateful step {step!r}: snapshot has state layout {found}, this code expects {layout}. "
                    "Migrate the recovery store with a creditflow release that knows both layouts, or start "
                    "fresh explicitly with a new, empty recovery directory."
                )
                raise StateLayoutError(msg)
        return build(resume)

    return builder


X = TypeVar("X")


def guarded_keyed_step(
    step: str,
    up: Stream[X],
    key: Callable[[X], str],
    layout: int,
    build: Callable[[Any], Any],
    batch: bool = False,
    unkey: Callable[[tuple[str, Any]], Any] | None = None,
    shards: ShardedState | None = None,
    scrubs: Callable[[X], bool] | None = None,
    layout_at: int | None = None,
    readable: Collection[int] = (),
) -> Stream[Any]:
    """Key (sub-step ``key``) -> layout-guarded ``stateful``/``stateful_batch`` ``step`` -> ``map("unkey")``.

    A plain function, not an operator: the sub-steps keep the ids of the
    calling operator's scope (``<operator>.key``, ``<operator>.<step>``,
    ``<operator>.unkey``), which the recovery store is keyed by. With
    ``batch``, each key's items of a batch travel as one parcel
    (``operators.parcels``) and reach the logic as one batch. ``unkey``
    turns a ``(key, value)`` output into the item passed on (default: the value).
    With ``shards``, the step keeps its keys in shards (``operators.sharded``:
    sub-steps ``shard``, ``<step>``, ``unkey``); ``scrubs`` marks the items that
    erase a person there. ``layout_at``, ``readable``: as in ``guarded_builder``.
    """
    guarded = guarded_builder(step, layout, build, layout_at, readable)
    if shards is not None:
        return sharded_stateful(
            step, up, key, guarded, shards, batch=batch, scrubs=scrubs, unkey=unkey if unkey is not None else value_of
        )
    if batch:  # a key's items of each batch as one parcel (operators.parcels): one pickle if they cross
        keyed_parcels = op.flat_map_batch("key", up, lambda items: parcels(items, key))
        out = op.stateful_batch(step, keyed_parcels, lambda resume: UnparcelLogic(guarded(resume)))
    else:
        out = op.stateful(step, op.key_on("key", up, key), guarded)
    return op.map("unkey", out, unkey if unkey is not None else value_of)
