"""`--source` strings become the right sources, and Kafka messages reach the same decode path."""

from __future__ import annotations

import orjson
import pytest
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.testing import TestingSink

from creditflow.errors import CreditflowError
from creditflow.events import Event
from flows.attribution import FlowSettings, build_flow
from flows.source_spec import parse_source_spec
from schemas.decode import decode
from sources.files import FileSource
from sources.generator import GeneratorSource
from sources.redis_streams import DEFAULT_BATCH, DEFAULT_GATHER_MS, RedisStreamSource


def test_kafka_spec_builds_bytewax_kafka_source_without_connecting() -> None:
    spec = parse_source_spec("kafka://b1:9092,b2:9092/events,spend")
    src = spec.build()
    assert isinstance(src, KafkaSource)
    assert (src._brokers, src._topics) == (["b1:9092", "b2:9092"], ["events", "spend"])
    flow = build_flow(src, TestingSink([]), FlowSettings(), adapt=spec.adapter())
    steps = {s.step_id for s in flow.substeps}
    assert {"creditflow.source", "creditflow.adapt", "creditflow.decode"} <= steps


def test_kafka_message_goes_through_the_adapter_into_the_decoder() -> None:
    spec = parse_source_spec("kafka://b1:9092/events")
    adapt = spec.adapter()
    assert adapt is not None
    payload = orjson.dumps(
        {"event_id": "k1", "tenant_id": "t", "event_type": "click", "timestamp": 1_767_225_600_000, "user_id": "u"}
    )
    msg = KafkaSourceMessage(key=None, value=payload, topic="events", partition=2, offset=7)
    event = decode(adapt(msg), 1_767_225_600_000)
    assert isinstance(event, Event)
    assert (event.position.source, event.position.partition, event.position.offset) == ("kafka", "events-2", "7")


def test_kafka_spec_without_topic_is_refused() -> None:
    with pytest.raises(CreditflowError, match="names no topic"):
        parse_source_spec("kafka://b1:9092/").build()


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("file:/tmp/a.jsonl,/tmp/b.avro", FileSource),
        ("redis://127.0.0.1:6379/0?streams=a,b", RedisStreamSource),
        ("generator:seed=3,persons=10,partitions=2", GeneratorSource),
    ],
)
def test_other_specs(text: str, kind: type) -> None:
    assert isinstance(parse_source_spec(text).build(), kind)


def test_generator_option_without_value_is_refused() -> None:
    with pytest.raises(CreditflowError, match="not key=value"):
        parse_source_spec("generator:seed").build()


@pytest.mark.parametrize(
    ("option", "default", "attribute", "good", "bads"),
    [
        ("batch", DEFAULT_BATCH, "_batch_size", 50, ("0", "-3", "lots")),  # entries read per stream at a time
        ("gather_ms", DEFAULT_GATHER_MS, "_gather_ms", 0, ("-5", "soon", "2.5")),  # the wait of a caught-up stream
    ],
)
def test_a_redis_read_option_sets_the_source_and_a_bad_one_is_refused(
    option: str, default: int, attribute: str, good: int, bads: tuple[str, ...]
) -> None:
    assert getattr(parse_source_spec("redis://127.0.0.1:6379/0?streams=a").build(), attribute) == default
    assert getattr(parse_source_spec(f"redis://127.0.0.1:6379/0?streams=a&{option}={good}").build(), attribute) == good
    for bad in bads:
        with pytest.raises(CreditflowError, match=f"{option}='{bad}'"):
            parse_source_spec(f"redis://127.0.0.1:6379/0?streams=a&{option}={bad}").build()
