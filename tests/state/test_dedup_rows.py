"""The de-duplication steps snapshot plain rows, and the objects the previous release pickled still resume."""

from __future__ import annotations

import pickle
import pickletools

import pytest

from creditflow.config import DAY_MS, TenantConfig, TenantConfigs
from creditflow.events import ConversionRow, DeadLetter, Event, SourcePosition, Utm
from operators.state_guard import StateLayoutError, guarded_builder
from state.conversion_dedup import SEEN_CONVERSION_LAYOUT_AT, ConversionDedupLogic, SeenConversion
from state.event_dedup import SEEN_EVENT_LAYOUT_AT, SPEND_ID_TTL_S, SpendDedupLogic
from state.journeys import ScoredConversion

POS = SourcePosition("f", "0", "0")
CONFIGS = TenantConfigs(TenantConfig(conversion_dedup_days=1))

# Captured from 0de4c24, which pickled the dataclass objects through their names:
# SeenConversion("", "e1", 1_000, 5.0, 86_400_000) and SeenEvent(5.0).
SEEN_CONVERSION_OBJECT = (
    b"\x80\x05\x95M\x00\x00\x00\x00\x00\x00\x00\x8c\x16state.conversion_dedup\x94\x8c\x0eSeenConversion\x94\x93\x94("
    b"\x8c\x00\x94\x8c\x02e1\x94M\xe8\x03G@\x14\x00\x00\x00\x00\x00\x00J\x00\\&\x05K\x01t\x94R\x94."
)
SEEN_EVENT_OBJECT = (
    b"\x80\x05\x952\x00\x00\x00\x00\x00\x00\x00\x8c\x11state.event_dedup\x94\x8c\tSeenEvent\x94\x93\x94"
    b"G@\x14\x00\x00\x00\x00\x00\x00K\x01\x86\x94R\x94."
)


def scored(event_id: str, ts_ms: int = 1_000, revision: int = 0) -> ScoredConversion:
    utm = Utm("", "", "")
    row = ConversionRow("t", "order-1", "", event_id, ts_ms, 9.0, "EUR", "purchase", 0, False, "", "", utm, utm)
    return ScoredConversion("u:ann", event_id, row, (), (), POS, revision=revision)


def global_ops(row: object) -> set[str]:
    ops = {op.name for op, _arg, _pos in pickletools.genops(pickle.dumps(row, pickle.HIGHEST_PROTOCOL))}
    return ops & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "NEWOBJ", "BUILD"}


def test_a_conversion_record_of_the_previous_release_resumes_and_keeps_deduplicating() -> None:
    logic = ConversionDedupLogic(CONFIGS, pickle.loads(SEEN_CONVERSION_OBJECT), now=lambda: 10.0)
    assert logic.notify_at_s() == 5.0 + 86_400.0

    copy, _ = logic.on_item(scored("e2", ts_ms=2_000))
    restated, _ = logic.on_item(scored("e1", revision=1))
    assert [type(x).__name__ for x in copy] == ["DeadLetter"]
    assert isinstance(copy[0], DeadLetter) and copy[0].reason == "duplicate_conversion"
    assert [type(x).__name__ for x in restated] == ["ConversionRow"]  # the kept conversion, restated: passes

    row = logic.snapshot()
    assert row == ("", "e1", 1_000, 5.0, DAY_MS, 1) and type(row) is tuple
    assert not global_ops(row)  # no class name in every key's row


def test_a_conversion_row_resumes_as_the_same_record() -> None:
    first = ConversionDedupLogic(CONFIGS, None, now=lambda: 7.0)
    first.on_item(scored("e1"))
    resumed = ConversionDedupLogic(CONFIGS, pickle.loads(pickle.dumps(first.snapshot())), now=lambda: 8.0)
    assert resumed.seen == SeenConversion("", "e1", 1_000, 7.0, DAY_MS)
    late_copy, _ = resumed.on_item(scored("e9", ts_ms=1_000 + DAY_MS + 1))  # past the window: a new conversion
    assert [type(x).__name__ for x in late_copy] == ["ConversionRow"]


def test_an_ad_spend_record_of_the_previous_release_resumes() -> None:
    logic = SpendDedupLogic(pickle.loads(SEEN_EVENT_OBJECT), now=lambda: 10.0)
    assert logic.notify_at_s() == 5.0 + SPEND_ID_TTL_S
    out, _ = logic.on_item(Event("s1", "t", "ad_spend", 1, POS))
    assert [type(x).__name__ for x in out] == ["DeadLetter"]
    assert logic.snapshot() == (5.0, 1) and not global_ops(logic.snapshot())


@pytest.mark.parametrize("layout_at", [SEEN_CONVERSION_LAYOUT_AT, SEEN_EVENT_LAYOUT_AT])
def test_the_guard_reads_the_layout_of_rows_and_of_old_objects(layout_at: int) -> None:
    build = guarded_builder("seen", 1, lambda resume: resume, layout_at=layout_at)
    old = pickle.loads(SEEN_CONVERSION_OBJECT if layout_at == SEEN_CONVERSION_LAYOUT_AT else SEEN_EVENT_OBJECT)
    assert build(old) == old
    assert build(tuple(old)) == tuple(old)
    with pytest.raises(StateLayoutError, match="snapshot has state layout 2"):
        build(tuple(old)[:layout_at] + (2,))
