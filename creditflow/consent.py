"""Consent to the tenant's attribution purpose: what an event states, and what a person's state allows.

A consent decision travels on an event's ``consent`` map (v2 schema: any event
may carry one, ``consent`` events must): purpose -> granted. Only the tenant's
``consent_purpose`` (default ``analytics``) matters to attribution. The latest
decision by event time wins, from whichever of the person's devices it came.

>>> from creditflow.events import Event, SourcePosition
>>> ev = Event("e1", "t", "consent", 5, SourcePosition("f", "0", "0"), user_id="u",
...            metadata={"consent": {"analytics": False, "ads": True}})
>>> decision_of(ev, "analytics"), decision_of(ev, "personalisation")
(False, None)
>>> allows(CONSENT_UNKNOWN, "opt_out"), allows(CONSENT_UNKNOWN, "opt_in"), allows(CONSENT_WITHDRAWN, "opt_out")
(True, False, False)
"""

from __future__ import annotations

from creditflow.events import Event
from state.journey_state import CONSENT_GRANTED, CONSENT_UNKNOWN, CONSENT_WITHDRAWN

__all__ = ["CONSENT_GRANTED", "CONSENT_UNKNOWN", "CONSENT_WITHDRAWN", "allows", "decision_of", "state_of"]


def decision_of(event: Event, purpose: str) -> bool | None:
    """What ``event`` says about ``purpose``: granted, withdrawn, or nothing (``None``)."""
    meta = event.metadata
    if not meta:
        return None
    consent = meta.get("consent")
    if not isinstance(consent, dict):
        return None
    granted = consent.get(purpose)
    return granted if isinstance(granted, bool) else None


def state_of(granted: bool) -> int:
    """The consent state a decision leads to."""
    return CONSENT_GRANTED if granted else CONSENT_WITHDRAWN


def allows(consent: int, mode: str) -> bool:
    """Whether a person in ``consent`` state may be tracked under the tenant's ``consent_mode``.

    ``opt_out``: unless withdrawn. ``opt_in``: only once granted.
    """
    if consent == CONSENT_GRANTED:
        return True
    if consent == CONSENT_WITHDRAWN:
        return False
    return mode == "opt_out"
