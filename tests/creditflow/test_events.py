"""The flow's records: fast construction keeps the dataclass contract (signature, defaults, frozen, pickling)."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

from creditflow import events, kpis
from creditflow.events import EMPTY_UTM, Context, Conversion, Event, SourcePosition, SpendMetrics, Utm, fast_init

POS = SourcePosition("redis", "ev0", "1-0")
RECORDS = [
    cls
    for module in (events, kpis)
    for cls in vars(module).values()
    if inspect.isclass(cls) and dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__
]


def _twin(cls: type) -> type:
    """The same fields as a plain frozen dataclass: the reference ``__init__``."""
    spec = [(f.name, f.type, f) for f in dataclasses.fields(cls)]
    fresh = [(n, t, dataclasses.field(default=f.default, default_factory=f.default_factory)) for n, t, f in spec]
    return dataclasses.make_dataclass(cls.__name__ + "Twin", fresh, frozen=True, slots=True)


def _sample_args(cls: type) -> list[object]:
    """One distinct value per required field (the types do not matter to __init__; a position is a real one,
    as records pickled flat take its fields)."""
    return [POS if f.name == "position" else f"{f.name}-value" for f in dataclasses.fields(cls) if _required(f)]


def _required(f: dataclasses.Field[object]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def test_every_flow_record_is_built_by_the_fast_init() -> None:
    assert {c.__name__ for c in RECORDS} >= {"Event", "SourcePosition", "RawRecord", "CreditRow", "KpiDelta"}
    for cls in RECORDS:
        assert "_set0" in cls.__init__.__code__.co_names, f"{cls.__name__} still has the dataclass __init__"


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_fields_and_defaults_match_the_dataclass_init(cls: type) -> None:
    twin = _twin(cls)
    args = _sample_args(cls)
    mine, reference = cls(*args), twin(*args)
    assert dataclasses.astuple(mine) == dataclasses.astuple(reference)
    names = [f.name for f in dataclasses.fields(cls)]
    every = [f"{n}-given" for n in names]
    assert dataclasses.astuple(cls(*every)) == tuple(every)  # positionally
    assert dataclasses.astuple(cls(**dict(zip(names, every, strict=True)))) == tuple(every)  # by keyword
    assert inspect.signature(cls).parameters.keys() == inspect.signature(twin).parameters.keys()


def _full_event() -> Event:
    """An event with every field set, its nested records included."""
    given: dict[str, object] = {
        "ts_ms": 5,
        "position": POS,
        "utm": Utm("s", "m", "c", "co", "t"),
        "click_ids": {"gclid": "g"},
        "context": Context("1.2.3.4", "ua", "mobile", "DE"),
        "conversion": Conversion("o1", 9.5, "EUR", "purchase"),
        "metrics": SpendMetrics(10, 2, 3.5, 1),
        "metadata": {"k": [1, 2]},
        "schema_version": 2,
    }
    return Event(**{f.name: given.get(f.name, f"{f.name}-given") for f in dataclasses.fields(Event)})  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_records_stay_frozen_and_pickle(cls: type) -> None:
    record = _full_event() if cls is Event else cls(*_sample_args(cls))
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, name, "changed")
    assert pickle.loads(pickle.dumps(record)) == record


def test_an_event_crosses_processes_as_one_flat_tuple() -> None:
    ev = _full_event()
    data = pickle.dumps(ev)
    assert pickle.loads(data) == ev  # every field, a new one included, or this fails
    for nested in (b"SourcePosition", b"Utm", b"Context", b"Conversion", b"SpendMetrics"):
        assert nested not in data  # nested records travel as tuples: one class to look up per event
    bare = pickle.loads(pickle.dumps(Event("e", "t", "click", 0, POS)))
    assert bare.utm is EMPTY_UTM and bare.context is None and bare.metrics is None and bare.click_ids == {}


def test_a_default_factory_gives_each_record_its_own_value() -> None:
    a = Event("e1", "t", "click", 0, POS)
    b = Event("e2", "t", "click", 0, POS)
    assert a.click_ids == {} and a.click_ids is not b.click_ids
    given = {"gclid": "g"}
    assert Event("e3", "t", "click", 0, POS, click_ids=given).click_ids is given


def test_missing_or_unknown_arguments_fail_like_a_dataclass() -> None:
    with pytest.raises(TypeError, match="missing"):
        SourcePosition("redis", "ev0")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword"):
        SourcePosition("redis", "ev0", "1-0", shard="x")  # type: ignore[call-arg]


def test_refuses_classes_it_cannot_build_faithfully() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class KeywordOnly:
        a: int = dataclasses.field(kw_only=True)

    for cls in (Mutable, Checked, KeywordOnly):
        with pytest.raises(TypeError):
            fast_init(cls)
