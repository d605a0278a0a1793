"""One published version of a tenant's data-driven model, as stored in Redis and ClickHouse.

A retrain (``jobs.retrain``) publishes a ``ModelWeights`` with ``action``
``"publish"``; rolling a tenant back to an earlier version republishes that
version's record with ``action`` ``"rollback"`` and a new ``published_at_ms``.
Both travel as JSON (:meth:`ModelWeights.to_json` / :func:`model_weights_from_json`)
and become one row of the ClickHouse table ``model_weights`` each.

>>> w = ModelWeights("acme", 2, "markov", {"email": 0.6, "search": 0.4}, None, "per_channel",
...                  trained_at_ms=1, window_start_ms=0, window_end_ms=1, journeys=10)
>>> model_weights_from_json(w.to_json()) == w
True
>>> w.scoring().version, w.scoring().split
(2, 'per_channel')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from creditflow.errors import CreditflowError
from creditflow.weights import ScoringWeights, check_scoring

__all__ = ["ACTIONS", "ModelWeights", "ModelWeightsError", "model_weights_from_json"]

ACTIONS = ("publish", "rollback")


class ModelWeightsError(CreditflowError, ValueError):
    """A weights record that cannot be used; the message names the field."""


@dataclass(frozen=True)
class ModelWeights:
    """A versioned, evaluated set of weights for one tenant."""

    tenant_id: str
    version: int
    method: str
    """The trainer that produced the weights: ``markov``, ``shapley`` or ``incrementality``."""
    channel_weights: Mapping[str, float]
    half_life_days: float | None
    split: str
    trained_at_ms: int = 0
    window_start_ms: int = 0
    """Event time of the oldest closed journey trained on."""
    window_end_ms: int = 0
    journeys: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Held-out evaluation of this method (e.g. ``log_loss``, ``auc``) and of the others (``<method>.<metric>``)."""
    shares: Mapping[str, float] = field(default_factory=dict)
    """Aggregate credit share per channel on the training journeys (for reports)."""
    action: str = "publish"
    published_at_ms: int = 0

    table = "model_weights"

    def scoring(self) -> ScoringWeights:
        """What the online scorer uses."""
        return ScoringWeights(self.version, dict(self.channel_weights), self.half_life_days, self.split)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    def as_action(self, action: str, published_at_ms: int) -> ModelWeights:
        return replace(self, action=action, published_at_ms=published_at_ms)


_FIELDS: dict[str, tuple[type, ...]] = {
    "tenant_id": (str,),
    "version": (int,),
    "method": (str,),
    "channel_weights": (dict,),
    "half_life_days": (int, float, type(None)),
    "split": (str,),
    "trained_at_ms": (int,),
    "window_start_ms": (int,),
    "window_end_ms": (int,),
    "journeys": (int,),
    "metrics": (dict,),
    "shares": (dict,),
    "action": (str,),
    "published_at_ms": (int,),
}


def model_weights_from_json(data: bytes | str) -> ModelWeights:
    """Parse and validate a record; :class:`ModelWeightsError` says which field is wrong.

    >>> model_weights_from_json(b'{"tenant_id": "acme"}')
    Traceback (most recent call last):
    ...
    creditflow.model_weights.ModelWeightsError: model weights record lacks 'version'; republish it with jobs.publish
    """
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ModelWeightsError(f"model weights record is not JSON ({e}); republish it with jobs.publish") from e
    if not isinstance(raw, dict):
        raise ModelWeightsError("model weights record must be a JSON object; republish it with jobs.publish")
    values: dict[str, Any] = {}
    for name, types in _FIELDS.items():
        if name not in raw:
            raise ModelWeightsError(f"model weights record lacks {name!r}; republish it with jobs.publish")
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ModelWeightsError(
                f"model weights field {name!r} must be {' or '.join(t.__name__ for t in types)} (got {value!r})"
            )
        values[name] = value
    for name in ("channel_weights", "metrics", "shares"):
        for k, v in values[name].items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ModelWeightsError(f"model weights field {name!r}: {k!r} must be a number (got {v!r})")
        values[name] = {k: float(v) for k, v in values[name].items()}
    if values["action"] not in ACTIONS:
        raise ModelWeightsError(f"model weights action {values['action']!r} is not one of {ACTIONS}")
    w = ModelWeights(**values)
    try:
        check_scoring(w.tenant_id, w.scoring())
    except CreditflowError as e:
        raise ModelWeightsError(str(e)) from e
    return w
