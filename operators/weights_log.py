"""The ``weights:log`` Redis stream as rows of ClickHouse ``model_weights``.

A retrain publishes each version (and each rollback) to Redis
(``creditflow.weights_store``); the flow reads the log stream as a second,
resumable input and writes its records through the same exactly-once sink as
everything else, so ``model_weights`` fills even on embedded chDB, whose path
only the flow may open. Which version *scores* is not decided here: every flow
process follows ``weights:current`` itself (``RedisWeights``).

>>> from creditflow.events import RawRecord, SourcePosition
>>> pos = SourcePosition("redis", "weights:log", "1-0")
>>> parse_weights_record(RawRecord(b"nope", pos)).reason
'parse_error'
>>> parse_weights_record(RawRecord(b'{"tenant_id": "acme"}', pos)).detail
"model weights record lacks 'version'; republish it with jobs.publish"
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from creditflow.events import RAW_CAP_BYTES, DeadLetter, RawRecord
from creditflow.model_weights import ModelWeights, ModelWeightsError, model_weights_from_json

__all__ = ["parse_weights_record", "weights_rows"]


def parse_weights_record(record: RawRecord) -> ModelWeights | DeadLetter:
    """A log entry as a ``ModelWeights`` row, or a dead letter saying what was wrong."""
    try:
        return model_weights_from_json(record.payload)
    except ModelWeightsError as e:
        reason = "parse_error" if "not JSON" in str(e) else "schema_violation"
        return DeadLetter(reason, str(e), record.payload[:RAW_CAP_BYTES], record.position, event_type="model_weights")


@operator
def weights_rows(step_id: str, up: Stream[RawRecord]) -> Stream[ModelWeights | DeadLetter]:
    """Parse each ``weights:log`` entry; nothing is dropped: a bad one is a dead letter."""
    return op.map("parse", up, parse_weights_record)
