"""The decode operator passes its ``PiiHasher`` to the decoder: hashed traits, scrubbed dead letters."""

from __future__ import annotations

import dataclasses
from typing import Any

import bytewax.operators as op
import orjson
import pytest
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


def test_a_decoded_touch_carries_its_derived_channel_and_campaign_as_enrich_gives_them() -> None:
    import time

    from operators.decode import enrich
    from schemas.decode import decode

    now = int(time.time() * 1000)
    payloads: list[dict[str, Any]] = [
        {"utm": {"source": "google", "medium": "cpc", "campaign": "spring"}},  # derived channel, UTM campaign
        {"click_ids": {"fbclid": "x1"}, "campaign_id": "c-9"},  # derived channel, own campaign
        {"channel": "email", "campaign_id": "c-1"},  # already its own: nothing to fill in
    ]
    records = [
        RawRecord(
            orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "tenant_id": "t1",
                    "event_type": "click",
                    "timestamp": now - 1000,
                    "anonymous_id": "a1",
                    **p,
                }
            ),
            SourcePosition("test", "0", str(i)),
        )
        for i, p in enumerate(payloads)
    ]
    decoded = decode_batch(records, TenantConfigs(), lambda: now)
    plain = [decode(r, now) for r in records]
    assert all(isinstance(e, Event) for e in plain)
    enriched = [enrich(e, TenantConfigs()) for e in plain]  # type: ignore[arg-type]
    assert decoded == enriched
    assert [(e.channel, e.campaign_id) for e in decoded] == [  # type: ignore[union-attr]
        ("paid_search", "spring"),
        ("organic_social", "c-9"),  # an fbclid without a paid medium
        ("email", "c-1"),
    ]
    assert [(e.channel, e.campaign_id) for e in plain] == [("", ""), ("", "c-9"), ("email", "c-1")]  # type: ignore[union-attr]
    with pytest.raises(dataclasses.FrozenInstanceError):  # still a frozen record once decode_batch returns it
        decoded[0].channel = "other"  # type: ignore[misc,union-attr]
