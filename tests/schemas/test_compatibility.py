"""Schema evolution: every version must read everything the previous version wrote.

The tests iterate ``SCHEMA_VERSIONS``, so adding ``schemas/event.v3.avsc`` is
checked against v2 automatically. Records are generated from the writer's own
``.avsc`` (a generic Avro -> hypothesis strategy), so new fields and nested
records are covered without touching this file.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditflow.events import CLICK_ID_NAMES, UTM_FIELDS, Context, Conversion, SpendMetrics
from schemas.decode import encode_avro
from schemas.registry import (
    LATEST_VERSION,
    SCHEMA_VERSIONS,
    UnknownSchemaVersionError,
    allowed_fields,
    load_schema,
    raw_schema,
    record_fields,
)

VERSIONS = sorted(SCHEMA_VERSIONS)
PAIRS = list(zip(VERSIONS, VERSIONS[1:], strict=False))

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "string": st.text(max_size=30),
    "bytes": st.binary(max_size=30),
}


def avro_strategy(schema: Any, named: dict[str, Any], namespace: str = "") -> st.SearchStrategy[Any]:
    """A hypothesis strategy for values of an Avro schema (plain JSON form)."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
        name = full if full in named else schema
        return st.deferred(lambda: named[name])
    if isinstance(schema, list):
        return st.one_of([avro_strategy(branch, named, namespace) for branch in schema])
    kind = schema["type"]
    if kind == "record":
        ns = schema.get("namespace", namespace)
        full = schema["name"] if "." in schema["name"] or not ns else f"{ns}.{schema['name']}"
        strategy = st.fixed_dictionaries({f["name"]: avro_strategy(f["type"], named, ns) for f in schema["fields"]})
        named[full] = named[schema["name"]] = strategy
        return strategy
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "map":
        return st.dictionaries(st.text(max_size=10), avro_strategy(schema["values"], named, namespace), max_size=3)
    if kind == "array":
        return st.lists(avro_strategy(schema["items"], named, namespace), max_size=3)
    return avro_strategy(kind, named, namespace)  # {"type": "long", ...} incl. logical types


def schema_strategy(version: int) -> st.SearchStrategy[dict[str, Any]]:
    return avro_strategy(raw_schema(version), {})


def write(version: int, datum: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(version), datum)
    return buf.getvalue()


def read(payload: bytes, writer: int, reader: int) -> dict[str, Any]:
    buf = io.BytesIO(payload)
    out = fastavro.schemaless_reader(buf, load_schema(writer), load_schema(reader))
    assert buf.tell() == len(payload)
    assert isinstance(out, dict)
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _fields(version: int) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in raw_schema(version)["fields"]}


# ---------------------------------------------------------------- the registry itself


def test_versions_are_contiguous_and_latest_is_max() -> None:
    assert VERSIONS == list(range(1, len(VERSIONS) + 1))
    assert LATEST_VERSION == VERSIONS[-1] >= 2
    for version, path in SCHEMA_VERSIONS.items():
        assert path.name == f"event.v{version}.avsc" and path.is_file()


@pytest.mark.parametrize("version", VERSIONS)
def test_parse_schema_succeeds(version: int) -> None:
    parsed: Any = fastavro.parse_schema(raw_schema(version))
    assert parsed["name"] == "creditflow.Event"
    assert load_schema(version) is load_schema(version)  # cached


@pytest.mark.parametrize("bad", [0, 99, -1, "1", None])
def test_unknown_version_raises(bad: Any) -> None:
    with pytest.raises(UnknownSchemaVersionError, match="known versions"):
        load_schema(bad)


@pytest.mark.parametrize("version", VERSIONS)
def test_optional_fields_are_null_unions_with_null_default(version: int) -> None:
    required = {"event_id", "tenant_id", "event_type", "timestamp"}
    for name, field in _fields(version).items():
        if name in required:
            assert "default" not in field, name
            continue
        assert isinstance(field["type"], list) and field["type"][0] == "null", name
        assert field.get("default", "missing") is None, name
    assert _fields(version)["timestamp"]["type"] == ["long", "string"]


@pytest.mark.parametrize("version", VERSIONS)
def test_nested_records_match_the_event_dataclasses(version: int) -> None:
    def names(cls: Any) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    assert record_fields(version, "utm") == set(UTM_FIELDS)
    assert record_fields(version, "click_ids") == set(CLICK_ID_NAMES)
    assert record_fields(version, "context") == names(Context)
    assert record_fields(version, "conversion") == names(Conversion)
    assert record_fields(version, "metrics") == names(SpendMetrics)
    with pytest.raises(KeyError):
        record_fields(version, "event_id")


# ---------------------------------------------------------------- each consecutive pair


@pytest.mark.parametrize(("old", "new"), PAIRS)
def test_allowed_fields_only_grow(old: int, new: int) -> None:
    assert allowed_fields(old) <= allowed_fields(new)
    old_fields, new_fields = _fields(old), _fields(new)
    for name in old_fields:
        assert new_fields[name]["type"] == old_fields[name]["type"], f"type of {name!r} changed in v{new}"
    for name in new_fields.keys() - old_fields.keys():
        assert "default" in new_fields[name], f"field {name!r} added in v{new} needs a default"


@pytest.mark.parametrize(("old", "new"), PAIRS)
@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_new_version_reads_records_of_previous_version(old: int, new: int, data: st.DataObject) -> None:
    datum = data.draw(schema_strategy(old))
    got = read(write(old, datum), writer=old, reader=new)
    for name in allowed_fields(old):
        assert same(got[name], datum[name]), name
    new_fields = _fields(new)
    for name in allowed_fields(new) - allowed_fields(old):
        assert same(got[name], new_fields[name]["default"]), name


FIXED: list[dict[str, Any]] = [
    {"event_id": "e1", "tenant_id": "t", "event_type": "click", "timestamp": 1_767_225_600_000, "user_id": "u"},
    {
        "event_id": "e2",
        "tenant_id": "t",
        "event_type": "click",
        "timestamp": "2026-01-01T00:00:00Z",
        "anonymous_id": "a",
        "channel": "paid_search",
        "campaign_id": "c",
        "utm": {"source": "google", "medium": "cpc"},
        "click_ids": {"gclid": "g", "msclkid": "m"},
        "referrer": "https://example.com/",
        "context": {"ip": "1.2.3.4", "country": "DE"},
        "metadata": '{"k": [1, 2]}',
    },
    {
        "event_id": "e3",
        "tenant_id": "t",
        "event_type": "conversion",
        "timestamp": 1,
        "user_id": "u",
        "conversion": {"conversion_id": "o", "value": 10.5, "currency": "EUR", "type": "purchase"},
    },
    {
        "event_id": "e4",
        "tenant_id": "t",
        "event_type": "ad_spend",
        "timestamp": 2,
        "schema_version": 1,
        "channel": "display",
        "campaign_id": "c",
        "metrics": {"impressions": 100, "clicks": 5, "cost": 3.25, "conversions": None},
    },
]


@pytest.mark.parametrize(("old", "new"), PAIRS)
@pytest.mark.parametrize("datum", FIXED, ids=[d["event_id"] for d in FIXED])
def test_fixed_records_survive_evolution(old: int, new: int, datum: dict[str, Any]) -> None:
    payload = encode_avro(datum, old)
    got = read(payload, writer=old, reader=new)
    for name, value in datum.items():
        if isinstance(value, dict):
            assert {k: got[name][k] for k in value} == value
            assert all(got[name][k] is None for k in got[name].keys() - value.keys())
        else:
            assert got[name] == value
    for name in allowed_fields(new) - datum.keys():
        assert got[name] is None


def test_encode_avro_rejects_fields_the_version_lacks() -> None:
    with pytest.raises(ValueError):
        encode_avro(dict(FIXED[0], consent={"analytics": True}), 1)


@pytest.mark.parametrize("version", VERSIONS)
@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_each_version_round_trips_itself(version: int, data: st.DataObject) -> None:
    datum = data.draw(schema_strategy(version))
    assert same(read(write(version, datum), writer=version, reader=version), datum)
