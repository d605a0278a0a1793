"""KPI windows: tumbling buckets, per-partition watermarks, lateness and bounds."""

from __future__ import annotations

import pytest

from creditflow.events import DeadLetter, KpiRow, SourcePosition
from creditflow.kpis import KpiDelta
from state.kpi_windows import KpiWindowLogic, PartitionClocks, WindowSettings

T0 = 1_767_225_600_000  # aligned to 5 s


class Clock:
    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


def delta(ts: int, part: str = "p0", **kw) -> KpiDelta:
    return KpiDelta("t1", "email", "c1", T0 + ts, SourcePosition("test", part, str(ts)), f"e{ts}", **kw)


def feed(lg: KpiWindowLogic, *ds: KpiDelta) -> list:
    out: list = []
    for d in ds:
        out.extend(lg.on_item(d)[0])
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_window_closes_when_watermark_passes_its_end(clock: Clock) -> None:
    lg = KpiWindowLogic(WindowSettings(length_ms=5000, allowed_lateness_ms=1000), None, clock)
    out = feed(lg, delta(0, impressions=1), delta(1000, clicks=1), delta(4999, impressions=1), delta(5500, cost=2.0))
    assert out == []  # watermark 4500 < 5000
    out = feed(lg, delta(6000, revenue=3.0, conversions=1.0))
    (row,) = out
    assert isinstance(row, KpiRow)
    assert (row.window_start_ms, row.window_end_ms, row.impressions, row.clicks) == (T0, T0 + 5000, 2, 1)
    assert (row.ctr, row.cvr, row.cpa, row.roas) == (0.5, 0.0, None, None)


def test_a_late_event_restates_its_closed_window_with_one_more_event(clock: Clock) -> None:
    lg = KpiWindowLogic(WindowSettings(length_ms=5000, allowed_lateness_ms=0), None, clock)
    (first,) = feed(lg, delta(0, clicks=1), delta(10, impressions=4), delta(10_000, clicks=1))
    assert (first.clicks, first.impressions, first.events) == (1, 4, 2)
    (restated,) = feed(lg, delta(100, clicks=1, revenue=5.0, conversions=1.0))
    assert isinstance(restated, KpiRow) and restated.window_start_ms == first.window_start_ms
    assert (restated.clicks, restated.impressions, restated.revenue, restated.events) == (2, 4, 5.0, 3)
    assert restated.ctr == 0.5  # ratios follow the new totals


def test_a_late_event_for_a_window_that_closed_empty_emits_it(clock: Clock) -> None:
    lg = KpiWindowLogic(WindowSettings(length_ms=5000, allowed_lateness_ms=0), None, clock)
    (_,) = feed(lg, delta(0, clicks=1), delta(12_000, clicks=1))  # [5000, 10000) closed without events
    (row,) = feed(lg, delta(7000, clicks=3))
    assert (row.window_start_ms - T0, row.clicks, row.events) == (5000, 3, 1)


def test_an_event_older_than_the_restate_horizon_goes_to_dead_letter(clock: Clock) -> None:
    settings = WindowSettings(length_ms=5000, allowed_lateness_ms=0, restate_horizon_ms=20_000)
    lg = KpiWindowLogic(settings, None, clock)
    feed(lg, delta(0, clicks=1), delta(30_000, clicks=1))
    assert len(lg.state.closed) <= settings.restate_horizon_ms // settings.length_ms  # the bound
    assert 0 not in {s - T0 for s in lg.state.closed}
    (late,) = feed(lg, delta(100, clicks=1))
    assert isinstance(late, DeadLetter) and late.reason == "late_event"
    assert "restatement horizon" in late.detail and "--restate-horizon" in late.detail
    assert [r.events for r in feed(lg, delta(12_000, clicks=1))] == [1]  # inside the horizon: restated


def test_replaying_a_restored_snapshot_in_any_order_ends_on_the_complete_totals(clock: Clock) -> None:
    """A window closed differently in two runs: the highest revision either run emits is the same."""
    settings = WindowSettings(length_ms=5000, allowed_lateness_ms=0)
    events = [delta(0, "p0", clicks=1), delta(3000, "p1", clicks=2), delta(6000, "p0", clicks=4)]
    events += [delta(4000, "p1", impressions=7), delta(9000, "p1", clicks=1)]

    def best(order: list) -> tuple[int, int, int]:
        lg = KpiWindowLogic(settings, None, clock)
        rows = [r for r in feed(lg, *order) + list(lg.on_eof()[0]) if r.window_start_ms == T0]
        top = max(rows, key=lambda r: r.events)
        return top.clicks, top.impressions, top.events

    assert best(events) == best(events[::-1]) == best(sorted(events, key=lambda d: d.ts_ms)) == (3, 7, 3)


def test_slow_partition_holds_the_watermark_back(clock: Clock) -> None:
    lg = KpiWindowLogic(WindowSettings(length_ms=5000, allowed_lateness_ms=0), None, clock)
    feed(lg, delta(0, "p0", clicks=1))
    # partition p1 starts days later (a byte-range split): p0's next events are not late
    assert feed(lg, delta(86_400_000, "p1", clicks=1)) == []
    out = feed(lg, delta(1000, "p0", clicks=1), delta(7000, "p0", clicks=1))
    rows = [r for r in out if isinstance(r, KpiRow)]
    assert [r.clicks for r in rows] == [2]
    assert not [r for r in out if isinstance(r, DeadLetter)]


def test_wall_time_advances_the_watermark_when_traffic_stops(clock: Clock) -> None:
    lg = KpiWindowLogic(WindowSettings(length_ms=5000, allowed_lateness_ms=1000), None, clock)
    feed(lg, delta(0, clicks=1))
    assert lg.notify_at().timestamp() == pytest.approx(clock.t + 6.0)
    clock.t += 6.0
    rows, discard = lg.on_notify()
    assert [r.clicks for r in rows] == [1] and discard is False


def test_a_quiet_key_closes_soon_after_other_keys_move_the_watermark(clock: Clock) -> None:
    settings = WindowSettings(length_ms=5000, allowed_lateness_ms=0, idle_timeout_s=5.0)
    shared = PartitionClocks()
    quiet = KpiWindowLogic(settings, None, clock, shared)
    busy = KpiWindowLogic(settings, None, clock, shared)
    feed(quiet, delta(0, clicks=1))
    clock.t += 4.9
    feed(busy, delta(4900, impressions=1))
    clock.t += 0.1
    assert quiet.on_notify()[0] == []  # watermark 4900: not yet
    wake = quiet.notify_at().timestamp()
    assert wake <= clock.t + 0.5, "must not wait for the 5 s idle timeout while traffic flows"
    clock.t += 0.3
    feed(busy, delta(5300, impressions=1))
    clock.t = max(clock.t, wake)
    rows, _ = quiet.on_notify()
    assert [(r.window_start_ms - T0, r.clicks) for r in rows] == [(0, 1)]


def test_notify_at_is_never_in_the_past(clock: Clock) -> None:
    lg = KpiWindowLogic(WindowSettings(length_ms=5000, allowed_lateness_ms=0), None, clock)
    feed(lg, delta(0, clicks=1))
    clock.t += 4.99  # the estimate (close at +5 s) is about to pass without new events
    assert lg.notify_at().timestamp() >= clock.t + 0.2 - 1e-6


def test_eof_flushes_open_windows(clock: Clock) -> None:
    lg = KpiWindowLogic(WindowSettings(), None, clock)
    feed(lg, delta(0, clicks=1), delta(5000, clicks=2))
    rows, _ = lg.on_eof()
    assert [r.clicks for r in rows] == [1, 2]


def test_open_windows_are_capped(clock: Clock) -> None:
    lg = KpiWindowLogic(WindowSettings(length_ms=1000, allowed_lateness_ms=0, max_open_windows=3), None, clock)
    feed(lg, delta(0, "slow", clicks=1))
    out = feed(lg, *(delta(1000 * i, "fast", clicks=1) for i in range(1, 8)))
    assert len(lg.state.buckets) <= 3
    assert sum(r.clicks for r in out if isinstance(r, KpiRow)) + sum(b[1] for b in lg.state.buckets.values()) == 8


def test_idle_key_without_open_windows_is_discarded(clock: Clock) -> None:
    lg = KpiWindowLogic(WindowSettings(idle_ttl_s=60), None, clock)
    feed(lg, delta(0, clicks=1))
    lg.on_eof()
    clock.t += 61
    assert lg.on_notify()[1] is True


def test_downtime_before_a_resume_does_not_close_windows_early(clock: Clock) -> None:
    lg = KpiWindowLogic(WindowSettings(length_ms=5000, allowed_lateness_ms=1000), None, clock)
    feed(lg, delta(0, clicks=1), delta(3000, clicks=1))
    snap = lg.snapshot()
    clock.t += 3600  # the process was down for an hour
    resumed = KpiWindowLogic(WindowSettings(length_ms=5000, allowed_lateness_ms=1000), snap, clock)
    out = feed(resumed, delta(4000, clicks=1))  # replayed after the snapshot: not late
    assert not [r for r in out if isinstance(r, DeadLetter)]
    rows, _ = resumed.on_eof()
    assert [r.clicks for r in rows] == [3]


def test_a_silent_partition_holds_the_watermark_until_it_turns_idle(clock: Clock) -> None:
    settings = WindowSettings(length_ms=5000, allowed_lateness_ms=0, idle_timeout_s=5.0)
    lg = KpiWindowLogic(settings, None, clock)
    feed(lg, delta(0, "p0", clicks=1), delta(0, "p1", clicks=1))
    clock.t += 2.0  # p1 still active (a process restarting, say): p0 racing ahead closes nothing
    assert feed(lg, delta(60_000, "p0", clicks=1)) == []
    assert feed(lg, delta(1000, "p1", clicks=1)) == []  # p1's event is on time, not late
    clock.t += 6.0  # now p1 has been silent longer than the idle timeout
    out = feed(lg, delta(61_000, "p0", clicks=1))
    assert [r.clicks for r in out if isinstance(r, KpiRow)] == [3]  # window [0, 5000) closed


def test_a_partition_behind_holds_back_keys_it_has_not_fed_yet(clock: Clock) -> None:
    from state.kpi_windows import PartitionClocks

    shared = PartitionClocks()
    settings = WindowSettings(length_ms=5000, allowed_lateness_ms=0)
    email = KpiWindowLogic(settings, None, clock, shared)
    other = KpiWindowLogic(settings, None, clock, shared)
    feed(other, KpiDelta("t1", "display", "c2", T0 + 0, SourcePosition("test", "p1", "0"), "x", clicks=1))
    # p0 races ahead on the email key; p1 (behind, at T0) has only fed another key so far
    assert feed(email, delta(0, "p0", clicks=1), delta(60_000, "p0", clicks=1)) == []
    out = feed(email, delta(1000, "p1", clicks=1))  # p1's first email event: on time, not late
    assert not [r for r in out if isinstance(r, DeadLetter)]


def test_after_a_restart_a_key_waits_for_partitions_it_never_heard_from(clock: Clock) -> None:
    from state.kpi_windows import PartitionClocks

    settings = WindowSettings(length_ms=5000, allowed_lateness_ms=0)
    before = PartitionClocks()
    KpiWindowLogic(settings, None, clock, before).on_item(delta(0, "p1", clicks=1))  # another key heard p1
    only_p0 = KpiWindowLogic(settings, None, clock, before)
    feed(only_p0, delta(0, "p0", clicks=1))
    snap = only_p0.snapshot()
    clock.t += 30  # crash and restart: a new worker table, p1's replay has not arrived yet
    resumed = KpiWindowLogic(settings, snap, clock, PartitionClocks())
    assert feed(resumed, delta(60_000, "p0", clicks=1)) == []  # p1 still holds the window back
    out = feed(resumed, delta(1000, "p1", clicks=1))  # p1's replayed event is on time
    assert not [r for r in out if isinstance(r, DeadLetter)]
