"""Whole-flow fuzz: bad records interleaved into real traffic change nothing but the dead letters.

A fixed set of valid events (``generate_events``, two tenants, one day) is the
baseline. Hypothesis interleaves bad records (every certain-bad category of
``test_fuzz_decode.py`` plus duplicate conversions) at random positions, runs the
whole attribution flow (one worker, and a two-worker cluster) and checks:

- no exception;
- every bad record is exactly one dead letter, found by its source position, with
  the reason its category promises;
- every other output (credit, conversion and KPI rows, floats rounded to 9 places,
  and the valid events' own dead letters) equals the baseline's, as multisets.

Valid records keep their source positions (``v<i>``) in every run; bad ones get ``b<j>``.
Two more properties: duplicate deliveries of touch events become ``duplicate_event``
dead letters and change no output (``test_duplicate_touch_event_ids``), and injection
strings, which are values, come out exactly as they went in.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson
import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from hypothesis import given
from hypothesis import strategies as st

from creditflow.channels import normalize_channel
from creditflow.config import DAY_MS
from creditflow.events import (
    DEAD_LETTER_REASONS,
    TOUCH_TYPES,
    UTM_FIELDS,
    ConversionRow,
    CreditRow,
    DeadLetter,
    KpiRow,
    RawRecord,
    SourcePosition,
    Utm,
)
from flows.attribution import FlowSettings, build_flow
from sources.generator import generate_events
from state.kpi_windows import WindowSettings
from tests.fuzz.test_fuzz_decode import Case, bad_case_strategies, fuzz_settings, injection_text

PART = "p0"
HOUR_MS = 3_600_000

VALID_EVENTS: list[dict[str, Any]] = list(generate_events(seed=7, n_persons=60, tenants=("acme", "globex"), days=1.0))
VALID_RECORDS = [
    RawRecord(orjson.dumps(ev), SourcePosition("fuzz", PART, f"v{i}")) for i, ev in enumerate(VALID_EVENTS)
]
CONVERSIONS = [i for i, ev in enumerate(VALID_EVENTS) if ev["event_type"] == "conversion"]
KPI_TOUCHES = [i for i, ev in enumerate(VALID_EVENTS) if ev["event_type"] in ("click", "impression")]
assert len(CONVERSIONS) >= 5 and len(KPI_TOUCHES) >= 20

BAD_CATEGORIES = bad_case_strategies(int(time.time() * 1000) + HOUR_MS)
"""Built with the wall clock plus an hour: the flow decodes with the wall clock, later than now,
and a 'future' timestamp must still be more than 24 h ahead then."""


PATIENT = FlowSettings(windows=WindowSettings(allowed_lateness_ms=7 * DAY_MS))
"""Settings of the two-worker comparisons: KPI windows close only at the end of the input, with the
same rows as one worker gives. With the default 2 s lateness, two workers replaying this input close
some windows before all their events arrived and restate them (``test_two_workers_with_default_
lateness_restate_to_exact_kpis``): the latest revisions are exact, but the row sets differ by run."""


def run(records: list[RawRecord], workers: int = 1, flow_settings: FlowSettings | None = None) -> list[Any]:
    out: list[Any] = []
    if flow_settings is None:
        flow_settings = FlowSettings() if workers == 1 else PATIENT
    flow = build_flow(TestingSource(records), TestingSink(out), flow_settings)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, addresses=[], proc_id=0, worker_count_per_proc=workers)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, Utm):
        return value.as_tuple()
    return value


def row_tuple(row: CreditRow | ConversionRow | KpiRow) -> tuple[Any, ...]:
    """A row as a hashable tuple (type name first), floats rounded to 9 places."""
    return (type(row).__name__, *(_plain(getattr(row, f.name)) for f in dataclasses.fields(row)))


def rows_of(out: Iterable[Any]) -> Counter[tuple[Any, ...]]:
    return Counter(row_tuple(r) for r in out if not isinstance(r, DeadLetter))


def dead_letters_of(out: Iterable[Any], exclude: Iterable[SourcePosition] = ()) -> Counter[tuple[str, str]]:
    skip = set(exclude)
    return Counter((d.reason, d.position.offset) for d in out if isinstance(d, DeadLetter) and d.position not in skip)


@functools.cache
def baseline() -> tuple[Counter[tuple[Any, ...]], Counter[tuple[str, str]]]:
    out = run(VALID_RECORDS)
    return rows_of(out), dead_letters_of(out)


def test_baseline_is_meaningful_and_the_same_on_two_workers() -> None:
    rows, dead = baseline()
    kinds = Counter(r[0] for r in rows.elements())
    assert kinds["CreditRow"] > 50 and kinds["ConversionRow"] == len(CONVERSIONS) and kinds["KpiRow"] > 100, kinds
    assert not dead, dead
    two = run(VALID_RECORDS, workers=2)
    assert rows_of(two) == rows and dead_letters_of(two) == dead


def _diff(got: Counter[Any], want: Counter[Any]) -> str:
    extra, missing = list((got - want).elements()), list((want - got).elements())
    return f"{len(extra)} rows too many, e.g. {extra[:3]}; {len(missing)} missing, e.g. {missing[:3]}"


# ---------------------------------------------------------------- bad records interleaved


def copy_of_conversion(i: int, kind: str, event_id: str = "", shift_ms: int = 0, value: float = 0.0) -> bytes:
    """Valid conversion ``i`` again: the same event ("exact"), the same person with another event id,
    time and value ("same_person"), or the same conversion_id from a person without touches ("other_person")."""
    ev = dict(VALID_EVENTS[i])
    if kind != "exact":
        ev["event_id"] = event_id or ev["event_id"] + "-again"
        ev["timestamp"] += shift_ms
        ev["conversion"] = {**ev["conversion"], "value": value}
    if kind == "other_person":
        for key in ("user_id", "anonymous_id", "device_id"):
            ev.pop(key, None)
        ev["user_id"] = f"u-copy-{i}"
    return orjson.dumps(ev)


@st.composite
def duplicate_conversion(draw: st.DrawFn, kinds: tuple[str, ...]) -> tuple[Case, int]:
    """A copy of a valid conversion of one of ``kinds``, to be placed after the original."""
    i = draw(st.sampled_from(CONVERSIONS))
    kind = draw(st.sampled_from(kinds))
    payload = copy_of_conversion(
        i,
        kind,
        draw(st.sampled_from(["", "x", "'; DROP TABLE x; --"])),
        draw(st.integers(-DAY_MS, DAY_MS)),
        draw(st.floats(0, 1000)),
    )
    return Case("duplicate_conversion", payload, "duplicate_conversion", f"{kind} copy of v{i}"), i


ALL_COPIES = ("exact", "same_person", "other_person")
SAME_PERSON_COPIES = ("exact", "same_person")
"""Two workers: a copy from another person may reach the dedup step first (see
``test_cross_person_duplicates_on_two_workers``), so the fuzz there uses same-person copies only."""


def bad_items(copies: tuple[str, ...]) -> st.SearchStrategy[tuple[Case, int | None]]:
    """A bad record of a category chosen uniformly, with the valid index it must follow (duplicates)."""

    def item(category: str) -> st.SearchStrategy[tuple[Case, int | None]]:
        if category == "duplicate_conversion":
            return duplicate_conversion(copies)
        return BAD_CATEGORIES[category].map(lambda c: (c, None))

    return st.sampled_from([*BAD_CATEGORIES, "duplicate_conversion"]).flatmap(item)


@dataclasses.dataclass(frozen=True)
class Mixed:
    """Valid and bad records in source order; ``bad`` maps a bad record's position to its case."""

    records: list[RawRecord]
    bad: dict[SourcePosition, Case]

    def __repr__(self) -> str:
        index = {r.position: k for k, r in enumerate(self.records)}
        cases = ", ".join(f"@{index[pos]}: {case!r}" for pos, case in self.bad.items())
        return f"Mixed({len(self.records)} records; bad: {cases})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints dataclasses field by field
        printer.text(repr(self))


@st.composite
def interleaved(draw: st.DrawFn, max_bad: int = 12, copies: tuple[str, ...] = ALL_COPIES) -> Mixed:
    """The valid records with bad ones inserted at random places (a duplicate after its original)."""
    n = len(VALID_RECORDS)
    items = draw(st.lists(bad_items(copies), min_size=1, max_size=max_bad))
    slots = sorted(
        (draw(st.integers(0 if after is None else after + 1, n)), j, case) for j, (case, after) in enumerate(items)
    )
    merged: list[RawRecord] = []
    bad: dict[SourcePosition, Case] = {}
    done = 0
    for index, j, case in slots:
        merged.extend(VALID_RECORDS[done:index])
        done = index
        pos = SourcePosition("fuzz", PART, f"b{j}")
        merged.append(RawRecord(case.payload, pos))
        bad[pos] = case
    merged.extend(VALID_RECORDS[done:])
    return Mixed(merged, bad)


def check_run(out: list[Any], bad: dict[SourcePosition, Case]) -> None:
    dead = [d for d in out if isinstance(d, DeadLetter)]
    found = Counter(d.position for d in dead)
    for pos, case in bad.items():
        assert found[pos] == 1, f"{case!r} gave {found[pos]} dead letters"
        (letter,) = [d for d in dead if d.position == pos]
        assert letter.reason in DEAD_LETTER_REASONS
        assert letter.reason == case.expected, f"{case!r}: {letter.reason}: {letter.detail}"
    base_rows, base_dead = baseline()
    assert dead_letters_of(out, exclude=bad) == base_dead
    rows = rows_of(out)
    assert rows == base_rows, _diff(rows, base_rows)


def _count(stats: Counter[str], kind: str, bad: dict[SourcePosition, Case]) -> None:
    stats[f"flow.{kind}.runs"] += 1
    for case in bad.values():
        stats[f"flow.bad.{case.category}"] += 1


@fuzz_settings(60)
@given(mixed=interleaved())
def test_bad_records_change_nothing_but_dead_letters(mixed: Mixed, fuzz_stats: Counter[str]) -> None:
    _count(fuzz_stats, "one_worker", mixed.bad)
    check_run(run(mixed.records), mixed.bad)


@fuzz_settings(15)
@given(mixed=interleaved(max_bad=25, copies=SAME_PERSON_COPIES))
def test_bad_records_change_nothing_on_two_workers(mixed: Mixed, fuzz_stats: Counter[str]) -> None:
    _count(fuzz_stats, "two_workers", mixed.bad)
    check_run(run(mixed.records, workers=2), mixed.bad)


# ---------------------------------------------------------------- two workers: measured findings


def test_cross_person_duplicates_on_two_workers(fuzz_stats: Counter[str]) -> None:
    """Measured: with two workers, a copy of a conversion sent by another person right after the
    original sometimes reaches the tenant-wide dedup step (after scoring, keyed by conversion id)
    first; then the copy (here with value 0) is credited and the genuine conversion becomes the
    duplicate_conversion dead letter. Asserted: each conversion is credited once, and exactly one of
    the pair is dead-lettered. The count of genuine conversions lost goes to the fuzz summary."""
    chosen = set(CONVERSIONS[:8])
    merged: list[RawRecord] = []
    copies: dict[int, SourcePosition] = {}
    for k, rec in enumerate(VALID_RECORDS):
        merged.append(rec)
        if k in chosen:
            copies[k] = SourcePosition("fuzz", PART, f"c{k}")
            merged.append(RawRecord(copy_of_conversion(k, "other_person"), copies[k]))
    for _ in range(4):
        out = run(merged, workers=2)
        dead = {d.position: d.reason for d in out if isinstance(d, DeadLetter)}
        credited = Counter((c.tenant_id, c.conversion_id) for c in out if isinstance(c, ConversionRow))
        for k, pos in copies.items():
            ev = VALID_EVENTS[k]
            assert credited[(ev["tenant_id"], ev["conversion"]["conversion_id"])] == 1
            original, copy = dead.get(VALID_RECORDS[k].position), dead.get(pos)
            assert sorted(r for r in (original, copy) if r) == ["duplicate_conversion"], (original, copy)
            fuzz_stats["flow.cross_person_copy_2w.pairs"] += 1
            fuzz_stats["flow.cross_person_copy_2w.original_lost"] += original is not None


def _latest_kpi_rows(out: Iterable[Any]) -> dict[tuple[Any, ...], KpiRow]:
    """Each window's revision with the most events (what ``kpi_windows_latest`` shows)."""
    latest: dict[tuple[Any, ...], KpiRow] = {}
    for r in out:
        if isinstance(r, KpiRow):
            key = (r.tenant_id, r.window_start_ms, r.channel, r.campaign_id)
            if key not in latest or r.events > latest[key].events:
                latest[key] = r
    return latest


RESTATING = FlowSettings(windows=WindowSettings(restate_horizon_ms=7 * DAY_MS))
"""Default lateness; closed windows take late events for as long as this input's history (days of
events replayed in a second: a delta held one batch behind on the other worker is hours late)."""


def test_two_workers_with_default_lateness_restate_to_exact_kpis(fuzz_stats: Counter[str]) -> None:
    """Two workers with the default 2 s lateness replaying the valid events close some windows before
    all their events arrived (measured: differently from run to run; one worker never does). Those
    events restate their windows: credit is unaffected, nothing is a late_event dead letter, and each
    window's latest revision equals what one worker emits."""
    base_out = run(VALID_RECORDS)
    base = _latest_kpi_rows(base_out)
    base_rows = rows_of(base_out)
    for _ in range(4):
        out = run(VALID_RECORDS, workers=2, flow_settings=RESTATING)
        assert [d for d in out if isinstance(d, DeadLetter)] == []
        assert _without_kpis(rows_of(out)) == _without_kpis(base_rows)
        latest = _latest_kpi_rows(out)
        assert latest.keys() == base.keys()
        for key, row in latest.items():
            want = base[key]
            assert (row.impressions, row.clicks, row.events) == (want.impressions, want.clicks, want.events), key
            assert row.revenue == pytest.approx(want.revenue) and row.cost == pytest.approx(want.cost), key
        fuzz_stats["flow.two_workers_default_lateness.runs"] += 1
        fuzz_stats["flow.two_workers_default_lateness.restated_rows"] += sum(isinstance(r, KpiRow) for r in out) - len(
            latest
        )


# ---------------------------------------------------------------- duplicate touch event ids (measured)


def _kpi_volume(rows: Counter[tuple[Any, ...]]) -> tuple[int, int]:
    """(impressions, clicks) summed over every KPI row."""
    fields = [f.name for f in dataclasses.fields(KpiRow)]
    imps, clicks = fields.index("impressions") + 1, fields.index("clicks") + 1
    kpi = [r for r in rows.elements() if r[0] == "KpiRow"]
    return sum(r[imps] for r in kpi), sum(r[clicks] for r in kpi)


def _without_kpis(rows: Counter[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    return Counter({r: n for r, n in rows.items() if r[0] != "KpiRow"})


def run_with_duplicate_touches(copies: list[tuple[int, int]]) -> tuple[list[Any], dict[SourcePosition, int]]:
    """The valid records plus exact copies (same event id) of touch ``i`` inserted before valid index ``at``."""
    merged: list[RawRecord] = []
    where: dict[SourcePosition, int] = {}
    done = 0
    for j, (at, i) in enumerate(sorted(copies)):
        merged.extend(VALID_RECORDS[done:at])
        done = at
        pos = SourcePosition("fuzz", PART, f"d{j}")
        merged.append(RawRecord(VALID_RECORDS[i].payload, pos))
        where[pos] = i
    merged.extend(VALID_RECORDS[done:])
    return run(merged), where


def test_duplicate_touch_event_ids(fuzz_stats: Counter[str]) -> None:
    """A touch delivered twice right after itself: kept once in the journey, counted once in the
    KPI windows, and the copy is a ``duplicate_event`` dead letter at its own position."""
    dup = KPI_TOUCHES[::3]
    out, where = run_with_duplicate_touches([(i + 1, i) for i in dup])
    rows = rows_of(out)
    base_rows, base_dead = baseline()
    assert rows == base_rows, "a duplicate touch changed credit, conversions or KPIs"
    extra = dead_letters_of(out) - base_dead
    assert extra == Counter(("duplicate_event", pos.offset) for pos in where), extra
    fuzz_stats["flow.duplicate_touch.deliveries"] += len(where)


def test_a_copy_of_an_impression_after_its_device_was_linked_is_a_duplicate() -> None:
    """An anonymous device's impression (kept as a remembered id only), its device then linked to a
    user: a copy arriving after the link reaches the user's journey, which must know the id (found by
    hypothesis: the adopted journey's remembered ids were dropped, and the copy went on as a late touch)."""
    found = None
    for i, ev in enumerate(VALID_EVENTS):
        if ev["event_type"] != "impression" or not ev.get("anonymous_id") or ev.get("user_id"):
            continue
        links = [
            k
            for k in range(i + 1, len(VALID_EVENTS))
            if VALID_EVENTS[k].get("anonymous_id") == ev["anonymous_id"] and VALID_EVENTS[k].get("user_id")
        ]
        if links:
            found = (links[0] + 1, i)
            break
    assert found is not None, "the generated traffic has a device linked after an impression"
    out, where = run_with_duplicate_touches([found])
    base_rows, base_dead = baseline()
    assert rows_of(out) == base_rows
    assert dead_letters_of(out) - base_dead == Counter(("duplicate_event", pos.offset) for pos in where)


@fuzz_settings(15)
@given(data=st.data())
def test_duplicate_touches_anywhere_later(data: st.DataObject, fuzz_stats: Counter[str]) -> None:
    """Copies of touches placed anywhere after the original (within a person's last 16 touches,
    which covers every generated journey): credit and KPIs never change, and every copy is a
    ``duplicate_event`` dead letter."""
    touches = [i for i, ev in enumerate(VALID_EVENTS) if ev["event_type"] in TOUCH_TYPES]
    chosen = data.draw(st.lists(st.sampled_from(touches), min_size=1, max_size=20), label="touches")
    copies = [(data.draw(st.integers(i + 1, len(VALID_RECORDS)), label="before"), i) for i in chosen]
    out, where = run_with_duplicate_touches(copies)
    fuzz_stats["flow.duplicate_touch_later.runs"] += 1
    rows = rows_of(out)
    base_rows, base_dead = baseline()
    assert rows == base_rows, "a duplicate touch changed credit, conversions or KPIs"
    extra = dead_letters_of(out) - base_dead
    assert extra == Counter(("duplicate_event", pos.offset) for pos in where), extra
    fuzz_stats["flow.duplicate_touch_later.deliveries"] += len(where)


# ---------------------------------------------------------------- injection strings flow through unchanged


@dataclasses.dataclass(frozen=True)
class Renamed:
    weird: list[RawRecord]
    plain: list[RawRecord]
    mapping: dict[str, str]
    """Each weird value, as the flow writes it, to its plain counterpart."""

    def __repr__(self) -> str:
        return f"Renamed({self.mapping!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints dataclasses field by field
        printer.text(repr(self))


@st.composite
def renamed(draw: st.DrawFn) -> Renamed:
    """The valid events with some touches' channel, campaign, UTMs and referrer set to weird text,
    the same with plain names, and the map from each weird value (as the flow writes it) to the plain one."""
    clicks = [i for i, ev in enumerate(VALID_EVENTS) if ev["event_type"] == "click"]  # always in the KPI rows
    others = [i for i, ev in enumerate(VALID_EVENTS) if ev["event_type"] in TOUCH_TYPES - {"click"}]
    chosen = draw(st.lists(st.sampled_from(clicks), min_size=1, max_size=10, unique=True))
    chosen += draw(st.lists(st.sampled_from(others), max_size=10, unique=True))
    weird_events, plain_events = list(VALID_EVENTS), list(VALID_EVENTS)
    mapping: dict[str, str] = {}
    for i in chosen:
        weird: dict[str, Any] = {
            "channel": f"{draw(injection_text)}~channel{i}",  # suffixes keep every value distinct
            "campaign_id": f"{draw(injection_text)}~campaign{i}",
            "utm": {k: f"{draw(injection_text)}~{k}{i}" for k in UTM_FIELDS},
            "referrer": f"{draw(injection_text)}~{i}",
        }
        plain: dict[str, Any] = {
            "channel": f"plainchannel{i}",
            "campaign_id": f"plaincampaign{i}",
            "utm": {k: f"plain{k}{i}" for k in UTM_FIELDS},
            "referrer": f"https://plain{i}.example/",
        }
        weird_events[i] = {**VALID_EVENTS[i], **weird}
        plain_events[i] = {**VALID_EVENTS[i], **plain}
        mapping[normalize_channel(weird["channel"])] = plain["channel"]  # explicit channels are normalised
        mapping[weird["campaign_id"]] = plain["campaign_id"]
        mapping.update((weird["utm"][k], plain["utm"][k]) for k in UTM_FIELDS)

    def records(events: list[dict[str, Any]]) -> list[RawRecord]:
        return [dataclasses.replace(r, payload=orjson.dumps(ev)) for r, ev in zip(VALID_RECORDS, events, strict=True)]

    return Renamed(records(weird_events), records(plain_events), mapping)


def _rename(row: tuple[Any, ...], mapping: dict[str, str]) -> tuple[Any, ...]:
    def one(v: Any) -> Any:
        if isinstance(v, str):
            return mapping.get(v, v)
        if isinstance(v, tuple):
            return tuple(one(x) for x in v)
        return v

    return tuple(one(v) for v in row)


@fuzz_settings(8)
@given(case=renamed())
def test_injection_strings_come_out_as_they_went_in(case: Renamed, fuzz_stats: Counter[str]) -> None:
    """SQL/HTML injection, RTL marks and odd unicode in channels, campaigns and UTMs are values: the
    flow's output is the plain-named run's output with the weird names in place of the plain ones."""
    weird, plain, mapping = case.weird, case.plain, case.mapping
    fuzz_stats["flow.injection_valid.runs"] += 1
    weird_out, plain_out = run(weird), run(plain)
    assert not [d for d in weird_out if isinstance(d, DeadLetter)]
    renamed_rows = Counter({_rename(r, mapping): n for r, n in rows_of(weird_out).items()})
    plain_rows = rows_of(plain_out)
    assert renamed_rows == plain_rows, _diff(renamed_rows, plain_rows)
    seen = {v for r in rows_of(weird_out) for v in r if isinstance(v, str)}
    assert seen & set(mapping), "no weird value reached the output"
