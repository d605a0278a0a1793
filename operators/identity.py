"""The identity step: decides which person an event belongs to.

For now the person is the first present of user_id, device_id, anonymous_id.
The device-graph issue replaces this with stitched identities; it stays a
step of its own in front of the journeys so that change touches nothing else.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from creditflow.events import Event, PersonEvent


def person_id_of(event: Event) -> str:
    """user_id, else device_id, else anonymous_id, prefixed by its kind.

    The prefix keeps a device id from colliding with a user id of the same text.

    >>> from creditflow.events import SourcePosition
    >>> ev = Event("e", "t", "click", 0, SourcePosition("f", "0", "0"), anonymous_id="a1", device_id="d1")
    >>> person_id_of(ev)
    'd:d1'
    """
    if event.user_id:
        return "u:" + event.user_id
    if event.device_id:
        return "d:" + event.device_id
    return "a:" + event.anonymous_id


@operator
def resolve_person(step_id: str, up: Stream[Event]) -> Stream[PersonEvent]:
    """Attach the person id to events that name a person."""
    return op.map("person", up, lambda ev: PersonEvent(person_id_of(ev), ev))
