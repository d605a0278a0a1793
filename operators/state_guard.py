"""Refuse to resume from a snapshot whose state layout the running code does not know.

Bytewax hands a stateful step whatever was snapshotted under its step id. If
the state's shape changed between releases, unpickled old state would fail in
odd places or, worse, be misread. Every state dataclass carries a ``layout``
number; a mismatch stops the flow with a message naming the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from creditflow.errors import CreditflowError

S = TypeVar("S")
L = TypeVar("L")


class StateLayoutError(CreditflowError):
    """A snapshot was written by an incompatible state layout."""


def guarded_builder(step: str, layout: int, build: Callable[[S | None], L]) -> Callable[[S | None], L]:
    """Wrap a stateful builder so that a resume state of another layout is refused."""

    def builder(resume: S | None) -> L:
        if resume is not None:
            found = getattr(resume, "layout", None)
            if found != layout:
                msg = (
                    f"stateful step {step!r}: snapshot has state layout {found}, this code expects {layout}. "
                    "Migrate the recovery store with a creditflow release that knows both layouts, or start "
                    "fresh explicitly with a new, empty recovery directory."
                )
                raise StateLayoutError(msg)
        return build(resume)

    return builder
