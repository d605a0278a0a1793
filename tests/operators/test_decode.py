"""The decode operator passes its ``PiiHasher`` to the decoder: hashed traits, scrubbed dead letters."""

from __future__ import annotations

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from creditflow.config import TenantConfigs
from creditflow.events import DeadLetter, Event, RawRecord, SourcePosition
from creditflow.pii import PiiHasher
from operators.decode import decode_batch, decode_events

NOW = 1_767_225_600_000
PII = PiiHasher(b"operator-test-key-0123456789")
IDENTIFY = {
    "event_id": "i1",
    "tenant_id": "acme",
    "event_type": "identify",
    "timestamp": NOW - 1000,
    "user_id": "u1",
    "traits": {"email": "ann@example.com", "phone": "+49 30 1234567"},
    "context": {"ip": "198.51.100.4"},
}
RECORDS = [
    RawRecord(orjson.dumps(IDENTIFY), SourcePosition("test", "p", "0")),
    RawRecord(orjson.dumps(IDENTIFY)[:-20], SourcePosition("test", "p", "1")),
]


def _check(events: list[Event], dead: list[DeadLetter], pii: PiiHasher) -> None:
    assert len(events) == 1 and len(dead) == 1
    assert events[0].metadata == {
        "traits": {"email": pii.hash_email("acme", "ann@example.com"), "phone": pii.hash_phone("acme", "+49301234567")}
    }
    for value in (b"ann@example.com", b"1234567", b"198.51.100.4"):
        assert value not in dead[0].raw


def test_decode_batch_uses_the_given_hasher_and_defaults_to_the_unkeyed_one() -> None:
    for pii, kwargs in ((PII, {"pii": PII}), (PiiHasher.unkeyed(), {})):
        out = decode_batch(RECORDS, TenantConfigs(), lambda: NOW, **kwargs)  # type: ignore[arg-type]
        _check([x for x in out if isinstance(x, Event)], [x for x in out if isinstance(x, DeadLetter)], pii)


def test_decode_events_in_a_flow() -> None:
    oks: list[Event] = []
    errs: list[DeadLetter] = []
    flow = Dataflow("decode_pii")
    decoded = decode_events("decode", op.input("in", flow, TestingSource(RECORDS)), TenantConfigs(), pii=PII)
    op.output("oks", decoded.oks, TestingSink(oks))
    op.output("errs", decoded.errs, TestingSink(errs))
    run_main(flow)
    _check(oks, errs, PII)
