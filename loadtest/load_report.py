"""The load test's figures, verdicts, ``report.json`` and ``report.png``.

``run_figures`` turns what one run recorded (``RunRecord``: publisher and flow
progress samples, RSS and CPU samples, timings) plus what ClickHouse and the
recovery store hold afterwards into the figures of the report: sustained
throughput, conversion -> credit and window close -> KPI latencies (with their
split into "until the sink batch started" and "sink write"), consumer lag,
RSS, CPU and state per person, and pass/fail against ``Targets``.
``write_png`` draws published vs processed events/s, latency, lag and RSS
over time, one colour per run.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.measure import latency_summary, per_second, time_of_count


@dataclass(frozen=True)
class Targets:
    """The targets of issue 4."""

    events_per_s: float = 10_000.0
    """Sustained throughput: the flow keeps up with this rate (or drains at least this fast with ``--max``)."""
    keep_up_fraction: float = 0.98
    """Processed/published rate over the steady part that counts as keeping up."""
    conversion_to_credit_p99_s: float = 1.0
    window_close_to_kpi_p99_s: float = 1.0
    lag_growth_s_per_s: float = 0.02
    """The consumer lag (s) may grow at most this much per second of steady run (a linear fit)."""


@dataclass
class RunRecord:
    """What the orchestrator recorded during one run (wall-clock epoch seconds everywhere)."""

    processes: int
    mode: str
    """``rate`` (publish at a fixed rate while the flow runs) or ``max`` (pre-filled, drained)."""
    rate: float
    warmup_s: float
    lateness_ms: int
    t0: float = 0.0
    """Start of the measured phase: publishing (``rate``) or the flow's start (``max``)."""
    t_end: float = 0.0
    """End of publishing (``rate``) or the flow's exit (``max``)."""
    timings: dict[str, float | None] = field(default_factory=dict)
    published_total: int = 0
    publisher: dict[str, Any] = field(default_factory=dict)
    pub_samples: list[tuple[float, int]] = field(default_factory=list)
    progress_samples: list[tuple[float, int]] = field(default_factory=list)
    """``(t, records read by all flow processes: events + decoder dead letters)``."""
    monitor: list[dict[str, Any]] = field(default_factory=list)
    """Once a second: ``t``, ``published``, ``processed``, ``rss_kib`` and ``cpu_s`` per process, ``redis_bytes``."""
    final_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    flow_exit: str = ""


def _count_at(samples: Sequence[tuple[float, int]], t: float) -> int:
    """The last cumulative count at or before ``t`` (0 before the first sample)."""
    value = 0
    for ts, n in samples:
        if ts > t:
            break
        value = n
    return value


def _interp_count(samples: Sequence[tuple[float, int]], t: float) -> float:
    """A cumulative count at ``t``, linearly interpolated between samples (flat outside them)."""
    if not samples or t < samples[0][0]:
        return 0.0
    prev_t, prev_n = samples[0]
    for ts, n in samples[1:]:
        if ts >= t:
            return prev_n + (n - prev_n) * (t - prev_t) / (ts - prev_t) if ts > prev_t else float(n)
        prev_t, prev_n = ts, n
    return float(prev_n)


def _slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``points``."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else None


def steady_window(r: RunRecord) -> tuple[float, float]:
    """The part of the run throughput and latencies are judged on (wall epoch s).

    ``rate``: from ``warmup_s`` after publishing started to its end. ``max``:
    from 10 % to 90 % of the records read (start-up and the tail excluded).
    """
    if r.mode == "rate":
        return r.t0 + min(r.warmup_s, (r.t_end - r.t0) / 2), r.t_end
    lo = time_of_count(r.progress_samples, 0.1 * r.published_total) or r.t0
    hi = time_of_count(r.progress_samples, 0.9 * r.published_total) or r.t_end
    return lo, hi


def throughput(r: RunRecord) -> dict[str, Any]:
    lo, hi = steady_window(r)
    read = _count_at(r.progress_samples, hi) - _count_at(r.progress_samples, lo)
    first = next((t for t, n in r.progress_samples if n > 0), None)
    last = r.progress_samples[-1][0] if r.progress_samples else None
    total = r.progress_samples[-1][1] if r.progress_samples else 0
    return {
        "steady_window_s": [round(lo - r.t0, 2), round(hi - r.t0, 2)],
        "sustained_events_per_s": round(read / (hi - lo), 1) if hi > lo else None,
        "published_events_per_s": r.publisher.get("achieved_rate"),
        "records_read": total,
        "first_to_last_record_s": round(last - first, 2) if first is not None and last is not None else None,
    }


def lag(r: RunRecord) -> dict[str, Any]:
    """Consumer lag at each monitor sample: published - processed (events) and how old the next unread one is (s)."""
    lo, hi = steady_window(r)
    points: list[dict[str, Any]] = []
    for m in r.monitor:
        lag_s = None
        if r.mode == "rate" and m["processed"] < m["published"]:
            when = time_of_count(r.pub_samples, m["processed"] + 1)
            lag_s = round(max(0.0, m["t"] - when), 3) if when is not None else None
        elif r.mode == "rate":
            lag_s = 0.0
        # the published count is sampled every 0.2 s, so it can trail the read count a little: no negative lag
        points.append({"t": round(m["t"] - r.t0, 2), "events": max(0, m["published"] - m["processed"]), "s": lag_s})
    steady = [(p["t"], p["s"]) for p in points if p["s"] is not None and lo - r.t0 <= p["t"] <= hi - r.t0]
    slope = _slope(steady)
    seconds = [p["s"] for p in points if p["s"] is not None]
    return {
        "max_events": max((p["events"] for p in points), default=None),
        "max_s": max(seconds, default=None),
        "at_publish_end_s": next((p["s"] for p in reversed(points) if p["t"] <= r.t_end - r.t0), None),
        "growth_s_per_s": round(slope, 4) if slope is not None else None,
        "timeline": points,
    }


def _latency_block(
    rows: Sequence[Sequence[Any]], r: RunRecord, offset_ms: int, window: tuple[float, float] | None
) -> dict[str, Any]:
    """``rows`` of (event or close ms without ``offset_ms``, batch ms, commit ms): visible latency and its parts."""
    total: list[float] = []
    before_sink: list[float] = []
    sink_write: list[float] = []
    over_time: list[tuple[float, float]] = []
    unmatched = 0
    for at, batch, commit, *_ in rows:
        start = (at + offset_ms) / 1000
        if window is not None and not window[0] <= start <= window[1]:
            continue
        if not commit:
            unmatched += 1
            continue
        total.append(commit / 1000 - start)
        before_sink.append(batch / 1000 - start)
        sink_write.append((commit - batch) / 1000)
        over_time.append((start - r.t0, commit / 1000 - start))
    return {
        **latency_summary(total),
        "until_sink_batch": latency_summary(before_sink),
        "sink_write": latency_summary(sink_write),
        "no_commit_row": unmatched,
        "per_second": per_second(over_time),
    }


def latencies(r: RunRecord, ch: dict[str, Any]) -> dict[str, Any]:
    """Conversion -> credit visible and window close -> KPI visible (ms rows from ``measure.clickhouse_figures``)."""
    window = steady_window(r) if r.mode == "rate" else None
    kpi = _latency_block(ch["kpi_windows"], r, r.lateness_ms, window)
    kpi["restated_windows"] = sum(1 for row in ch["kpi_windows"] if row[3] > 1)
    credit = _latency_block(ch["credits"], r, 0, window)
    credit["restated_conversions"] = sum(1 for row in ch["credits"] if len(row) > 3 and row[3] > 1)
    return {
        "judged": r.mode == "rate",
        "note": None
        if r.mode == "rate"
        else "pre-filled events wait in Redis until the flow reads them: latencies here are queueing times",
        "conversion_to_credit_s": credit,
        "conversion_row_s": {
            k: v for k, v in _latency_block(ch["conversions"], r, 0, window).items() if k != "per_second"
        },
        "window_close_to_kpi_s": kpi,
    }


def resources(r: RunRecord) -> dict[str, Any]:
    """Peak RSS per flow process; CPU use (cores) per process and of the whole machine over the steady part."""
    lo, hi = steady_window(r)
    peaks: dict[str, int] = {}
    for m in r.monitor:
        for label, kib in m["rss_kib"].items():
            peaks[label] = max(peaks.get(label, 0), kib)
    inside = [m for m in r.monitor if lo <= m["t"] <= hi] or r.monitor
    cpu: dict[str, float] = {}
    if len(inside) >= 2:
        first, last = inside[0], inside[-1]
        for label, used in last["cpu_s"].items():
            if label in first["cpu_s"] and last["t"] > first["t"]:
                cpu[label] = round((used - first["cpu_s"][label]) / (last["t"] - first["t"]), 3)
    machine = None
    if len(inside) >= 2 and "machine_busy_s" in inside[0]:
        first, last = inside[0], inside[-1]
        span = last["machine_total_s"] - first["machine_total_s"]
        cores = span / (last["t"] - first["t"]) if last["t"] > first["t"] else 0
        machine = round((last["machine_busy_s"] - first["machine_busy_s"]) / span * cores, 2) if span else None
    helpers: dict[str, float] = {}
    if len(inside) >= 2 and last_helpers(inside):
        first, last = inside[0], inside[-1]
        for label, used in last["helper_cpu_s"].items():
            if label in first.get("helper_cpu_s", {}):
                helpers[label] = round((used - first["helper_cpu_s"][label]) / (last["t"] - first["t"]), 3)
    return {
        "worker_thread_steady": worker_thread_shares(inside),
        "machine_busy_cores_steady": machine,
        "load_test_cpu_cores_steady": helpers,
        "peak_rss_mib": {k: round(v / 1024, 1) for k, v in sorted(peaks.items())},
        "peak_rss_mib_total": round(max((sum(m["rss_kib"].values()) for m in r.monitor), default=0) / 1024, 1),
        "cpu_cores_steady": cpu,
        "redis_peak_mib": round(max((m.get("redis_bytes", 0) for m in r.monitor), default=0) / 2**20, 1),
    }


def worker_thread_shares(samples: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per flow process, the share of wall time its worker thread ran on a core, waited for one while
    runnable (the machine was busy), and was blocked (the GIL, I/O, or nothing to do) between the first
    and the last of ``samples``. A worker running ~1.0 is CPU-bound on its own thread: more throughput
    needs less work per event or more processes; a high wait says the machine's cores are the limit.

    >>> worker_thread_shares([{"t": 0.0, "worker_sched_s": {"p0": (1.0, 0.0)}},
    ...                       {"t": 10.0, "worker_sched_s": {"p0": (9.0, 0.5)}}])
    {'p0': {'running': 0.8, 'waiting_for_core': 0.05, 'blocked': 0.15}}
    """
    if len(samples) < 2:
        return {}
    first, last = samples[0], samples[-1]
    span = last["t"] - first["t"]
    out: dict[str, dict[str, float]] = {}
    for label, (run, wait) in sorted(last.get("worker_sched_s", {}).items()):
        before = first.get("worker_sched_s", {}).get(label)
        if before is None or span <= 0:
            continue
        running, waiting = (run - before[0]) / span, (wait - before[1]) / span
        out[label] = {
            "running": round(running, 3),
            "waiting_for_core": round(waiting, 3),
            "blocked": round(max(0.0, 1.0 - running - waiting), 3),
        }
    return out


def sink_batches(r: RunRecord, ch: dict[str, Any]) -> dict[str, Any]:
    """The single writer's batches: rows, write time, and the share of the steady part spent writing."""
    batches: dict[int, list[int]] = {}  # batch stamp -> [last commit ms, rows]
    for _table, batch, commit, rows, *_ in ch["batches"]:
        entry = batches.setdefault(batch, [batch, 0])
        entry[0] = max(entry[0], commit)
        entry[1] += rows
    lo, hi = steady_window(r)
    inside = [(b, c, n) for b, (c, n) in batches.items() if lo * 1000 <= b <= hi * 1000]
    writing = sum(c - b for b, c, _ in inside) / 1000
    return {
        "batches": len(batches),
        "rows_per_batch": latency_summary([float(n) for _, n in batches.values()]),
        "write_s": latency_summary([(c - b) / 1000 for b, (c, _) in batches.items()]),
        "steady_share_writing": round(writing / (hi - lo), 3) if hi > lo else None,
    }


def last_helpers(monitor: Sequence[dict[str, Any]]) -> bool:
    return bool(monitor[-1].get("helper_cpu_s")) and monitor[-1]["t"] > monitor[0]["t"]


def run_figures(r: RunRecord, ch: dict[str, Any], state: dict[str, Any], targets: Targets) -> dict[str, Any]:
    """Everything the report says about one run."""
    tp = throughput(r)
    lg = lag(r)
    lat = latencies(r, ch)
    decoder_dead = sum(c["dead"] for c in r.final_counts.values())
    read = sum(c["events"] + c["dead"] for c in r.final_counts.values())
    figures: dict[str, Any] = {
        "processes": r.processes,
        "mode": r.mode,
        "timings_s": {k: (round(v - r.t0, 3) if v is not None else None) for k, v in r.timings.items()},
        "flow_exit": r.flow_exit,
        "publisher": r.publisher,
        "counts": {
            "published": r.published_total,
            "read_by_flow": read,
            "events_decoded": read - decoder_dead,
            "decoder_dead_letters": decoder_dead,
            "all_read": read == r.published_total,
            "per_process": r.final_counts,
            "clickhouse_rows": ch["row_counts"],
            "dead_letters_by_reason": ch["dead_letters"],
        },
        "throughput": tp,
        "latency": lat,
        "lag": lg,
        "resources": resources(r),
        "sink": sink_batches(r, ch),
        "state": {**state, "bytes_per_person": state.get("bytes_per_key")},
        "timeline": _timeline(r),
    }
    figures["verdict"] = verdict(figures, r, targets)
    return figures


def _timeline(r: RunRecord) -> list[dict[str, Any]]:
    """Per second since ``t0``: events published and read in that second, RSS (MiB) per process."""
    out: list[dict[str, Any]] = []
    start = min([r.t0] + [m["t"] for m in r.monitor[:1]])
    end = max([r.t_end] + [m["t"] for m in r.monitor[-1:]])
    sec = int(start - r.t0) - 1
    while r.t0 + sec <= end:
        a, b = r.t0 + sec, r.t0 + sec + 1
        rss = next((m["rss_kib"] for m in r.monitor if a <= m["t"] < b), None)
        out.append(
            {
                "t": sec,
                "published_per_s": round(_interp_count(r.pub_samples, b) - _interp_count(r.pub_samples, a)),
                "processed_per_s": round(_interp_count(r.progress_samples, b) - _interp_count(r.progress_samples, a)),
                "rss_mib": {k: round(v / 1024, 1) for k, v in rss.items()} if rss else None,
            }
        )
        sec += 1
    return out


def verdict(f: dict[str, Any], r: RunRecord, t: Targets) -> dict[str, Any]:
    """Pass (True) / fail (False) / not judged (None) per target, with the figure it was judged on."""
    sustained = f["throughput"]["sustained_events_per_s"] or 0.0
    growth = f["lag"]["growth_s_per_s"]
    if r.mode == "rate":
        keeps_up = sustained >= t.keep_up_fraction * r.rate
        throughput_ok = r.rate >= t.events_per_s and keeps_up and growth is not None and growth <= t.lag_growth_s_per_s
    else:
        throughput_ok = sustained >= t.events_per_s
    conv = f["latency"]["conversion_to_credit_s"]["p99"]
    kpi = f["latency"]["window_close_to_kpi_s"]["p99"]
    judged = r.mode == "rate"
    return {
        "throughput_10k_sustained": {"pass": throughput_ok, "events_per_s": sustained, "offered_rate": r.rate},
        "p99_conversion_to_credit_le_1s": {
            "pass": (conv is not None and conv <= t.conversion_to_credit_p99_s) if judged else None,
            "p99_s": conv,
        },
        "p99_window_close_to_kpi_le_1s": {
            "pass": (kpi is not None and kpi <= t.window_close_to_kpi_p99_s) if judged else None,
            "p99_s": kpi,
        },
        "lag_not_growing": {
            "pass": (growth is not None and growth <= t.lag_growth_s_per_s) if judged else None,
            "growth_s_per_s": growth,
        },
        "all_records_read": f["counts"]["all_read"],
    }


def comparison(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Throughput of each process count relative to the first (medians when a count ran several times).

    >>> runs = [_fake(1, 9000.0, 0.5), _fake(1, 9400.0, 0.7), _fake(2, 4700.0, 2.0)]
    >>> comparison(runs)["ratio_vs_first"]
    {'1': 1.0, '2': 0.511}
    >>> comparison(runs[:2]) is None  # one process count: nothing to compare
    True
    """
    by_count = _by_processes(runs)
    if len(by_count) < 2:
        return None
    sustained = {k: _median([r["throughput"]["sustained_events_per_s"] for r in g]) for k, g in by_count.items()}
    base = next(iter(sustained.values())) or 0.0
    return {
        "sustained_events_per_s": sustained,
        "ratio_vs_first": {k: (round((v or 0.0) / base, 3) if base else None) for k, v in sustained.items()},
        "p99_conversion_to_credit_s": {
            k: _median([_p99(r, "conversion_to_credit_s") for r in g]) for k, g in by_count.items()
        },
    }


def repeatability(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per process count: how many of its runs met every judged target, and the medians of its runs
    (``creditflow loadtest --repeat N``). Worker CPU per event is the worker thread's running share over
    the sustained rate, summed over processes: what one event cost the flow's worker threads.

    >>> r = repeatability([_fake(1, 9000.0, 0.5), _fake(1, 9400.0, 2.5), _fake(1, 9900.0, 0.7)])["1"]
    >>> r["runs"], r["met_every_target"], r["median_sustained_events_per_s"], r["median_p99_conversion_to_credit_s"]
    (3, 2, 9400.0, 0.7)
    >>> r["median_worker_cpu_us_per_event"]
    85.1
    """
    out: dict[str, dict[str, Any]] = {}
    for count, group in _by_processes(runs).items():
        cpu: list[float | None] = []
        for r in group:
            shares = r["resources"]["worker_thread_steady"]
            rate = r["throughput"]["sustained_events_per_s"]
            cpu.append(round(sum(s["running"] for s in shares.values()) / rate * 1e6, 1) if shares and rate else None)
        out[count] = {
            "runs": len(group),
            "met_every_target": sum(1 for r in group if _met_every_target(r)),
            "median_sustained_events_per_s": _median([r["throughput"]["sustained_events_per_s"] for r in group]),
            "median_p99_conversion_to_credit_s": _median([_p99(r, "conversion_to_credit_s") for r in group]),
            "median_p99_window_close_to_kpi_s": _median([_p99(r, "window_close_to_kpi_s") for r in group]),
            "median_worker_cpu_us_per_event": _median(cpu),
        }
    return out


def _by_processes(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(str(r["processes"]), []).append(r)
    return groups


def _p99(run: dict[str, Any], latency: str) -> float | None:
    return run["latency"][latency]["p99"]  # type: ignore[no-any-return]


def _median(values: list[float | None]) -> float | None:
    """The median of the known values, 3 decimals; None when none is known."""
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def _passed(verdict: bool | dict[str, Any] | None) -> bool | None:
    """One target's verdict as pass/fail, None when the run did not judge it (a verdict is a bool or a
    dict with ``pass``)."""
    return verdict if verdict is None or isinstance(verdict, bool) else verdict["pass"]


def _met_every_target(run: dict[str, Any]) -> bool:
    """Every target the run judged passed (and it judged at least one)."""
    judged = [v for v in map(_passed, run["verdict"].values()) if v is not None]
    return bool(judged) and all(judged)


def _fake(processes: int, sustained: float, p99: float) -> dict[str, Any]:
    """A run's figures as far as ``comparison`` and ``repeatability`` read them (their doctests)."""
    return {
        "processes": processes,
        "throughput": {"sustained_events_per_s": sustained},
        "latency": {"conversion_to_credit_s": {"p99": p99}, "window_close_to_kpi_s": {"p99": 0.4}},
        "resources": {"worker_thread_steady": {"p0": {"running": 0.8}}},
        "verdict": {"p99_conversion_to_credit_le_1s": p99 <= 1.0, "not_judged": None},
    }


def overall(runs: Sequence[dict[str, Any]]) -> dict[str, bool | None]:
    """A target passes overall when it passed in every run that judged it."""
    out: dict[str, bool | None] = {}
    for name in runs[0]["verdict"]:
        judged = [v for r in runs if (v := _passed(r["verdict"][name])) is not None]
        out[name] = all(judged) if judged else None
    return out


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def settings_dict(obj: Any) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(obj).items()}


# ---------------------------------------------------------------------- the picture


def write_png(runs: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Four panels over time since each run's start: events/s, latency, lag, RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    (ax_rate, ax_lat), (ax_lag, ax_rss) = axes
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        c = colours[i % len(colours)]
        name = f"{run['processes']} proc" + (f" #{run['repeat']}" if run.get("repeat") else "")
        tl = run["timeline"]
        ts = [p["t"] for p in tl]
        ax_rate.plot(ts, [p["published_per_s"] for p in tl], "--", color=c, alpha=0.6, label=f"{name}: published")
        ax_rate.plot(ts, [p["processed_per_s"] for p in tl], "-", color=c, label=f"{name}: processed")
        conv = run["latency"]["conversion_to_credit_s"]["per_second"]
        ax_lat.plot([p["t"] for p in conv], [p["p99"] for p in conv], "-", color=c, label=f"{name}: conversion p99")
        ax_lat.plot([p["t"] for p in conv], [p["p50"] for p in conv], ":", color=c, label=f"{name}: conversion p50")
        kpi = run["latency"]["window_close_to_kpi_s"]["per_second"]
        ax_lat.plot([p["t"] for p in kpi], [p["p99"] for p in kpi], "^", color=c, ms=4, label=f"{name}: KPI window p99")
        lag_tl = run["lag"]["timeline"]
        if run["mode"] == "rate":
            ax_lag.plot([p["t"] for p in lag_tl], [p["s"] for p in lag_tl], "-", color=c, label=f"{name} (s)")
        else:
            ax_lag.plot([p["t"] for p in lag_tl], [p["events"] / 1000 for p in lag_tl], "-", color=c, label=f"{name}")
        labels = sorted({k for p in tl if p["rss_mib"] for k in p["rss_mib"]})
        for j, label in enumerate(labels):
            ax_rss.plot(
                ts,
                [p["rss_mib"].get(label) if p["rss_mib"] else None for p in tl],
                ["-", "--", ":", "-."][j % 4],
                color=c,
                label=f"{name}: {label}",
            )
    if not any(r["mode"] == "rate" for r in runs):  # a pre-fill publishes far faster than any flow reads
        top = max((p["processed_per_s"] for r in runs for p in r["timeline"]), default=0)
        ax_rate.set_ylim(0, top * 1.3 + 1)
        ax_lat.text(0.5, 0.5, "pre-filled: queueing times, not judged", transform=ax_lat.transAxes, ha="center")
    ax_rate.set_title("Events per second")
    ax_rate.set_ylabel("events/s")
    ax_lat.set_title("Latency to visible in ClickHouse (per second of event/close time)")
    ax_lat.set_ylabel("seconds")
    ax_lat.axhline(1.0, color="grey", lw=0.8, ls="--")
    rate_mode = any(r["mode"] == "rate" for r in runs)
    ax_lag.set_title("Consumer lag" + (" (age of the oldest unread event)" if rate_mode else " (events unread)"))
    ax_lag.set_ylabel("seconds" if rate_mode else "thousand events")
    ax_rss.set_title("RSS per flow process")
    ax_rss.set_ylabel("MiB")
    for ax in axes.flat:
        ax.set_xlabel("seconds since start")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="x-small")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
