"""Parcels: the items of a batch bound for one key, sent on as one item.

Bytewax 0.21.1 pickles each item it sends to another process on its own,
and timely serializes each one twice (once to size its message). Much of a
small item's cost is per pickle: a class looked up on unpickling, strings
(tenant ids, stream names) written again in every item. A parcel
``(key, [item, ...])`` is one pickle per key and batch, in which each class
and repeated string is written once. In a two-process load test of 100k
events, parcels for the sharded steps turned 250k pickled items into 36k
(``operators.sharded.by_shard``); the sinks and the KPI windows take parcels
as well.

Items keep their order within a parcel, so a key's items arrive in the order
they had, as Bytewax keeps it for single items.

>>> parcels(["apple", "avocado", "banana", "apricot"], lambda w: w[0])
[('a', ['apple', 'avocado', 'apricot']), ('b', ['banana'])]
>>> unparcel([["apple", "avocado"], ["banana"]])
['apple', 'avocado', 'banana']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from bytewax.operators import StatefulBatchLogic

X = TypeVar("X")


def parcels(items: Iterable[X], key: Callable[[X], str]) -> list[tuple[str, list[X]]]:
    """``items`` grouped by ``key`` as ``(key, [item, ...])``, keys in first-seen order, items in order."""
    out: dict[str, list[X]] = {}
    for item in items:
        k = key(item)
        parcel = out.get(k)
        if parcel is None:
            out[k] = [item]
        else:
            parcel.append(item)
    return list(out.items())


def unparcel(values: Iterable[Iterable[X]]) -> list[X]:
    """The items of parcels, in order."""
    return [item for parcel in values for item in parcel]


def items_of(values: Iterable[X | list[X]]) -> list[X]:
    """Single items and parcels (lists) mixed, as a sink may get them: the items, in order.

    >>> items_of(["a", ["b", "c"], "d"])
    ['a', 'b', 'c', 'd']
    """
    out: list[X] = []
    for value in values:
        if type(value) is list:
            out.extend(value)
        else:
            out.append(value)  # type: ignore[arg-type]
    return out


class UnparcelLogic(StatefulBatchLogic[list[Any], Any, Any]):
    """A ``StatefulBatchLogic`` given parcels, handing their items to ``inner`` as one batch.

    >>> class Count:
    ...     def __init__(self): self.n = 0
    ...     def on_batch(self, values): self.n += len(values); return [self.n], False
    >>> UnparcelLogic(Count()).on_batch([[1, 2], [3]])
    ([3], False)
    """

    __slots__ = ("inner",)

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def on_batch(self, values: list[list[Any]]) -> tuple[Iterable[Any], bool]:
        return self.inner.on_batch(unparcel(values))  # type: ignore[no-any-return]

    def on_notify(self) -> tuple[Iterable[Any], bool]:
        return self.inner.on_notify()  # type: ignore[no-any-return]

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        return self.inner.on_eof()  # type: ignore[no-any-return]

    def notify_at(self) -> datetime | None:
        return self.inner.notify_at()  # type: ignore[no-any-return]

    def snapshot(self) -> Any:
        return self.inner.snapshot()
