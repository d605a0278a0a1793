"""What the load test measures, and the maths: percentiles, progress lines, RSS, state size, ClickHouse latencies.

While the flow runs: ``ProgressTally`` parses the flow's progress log lines
(``operators/progress.py``), ``process_tree``/``rss_kib``/``cpu_seconds``/``sched_seconds``
read ``/proc``. After it exits (chDB lets one process hold a data path, so never
while it runs): ``state_size`` reads the Bytewax recovery store, and
``read_clickhouse`` runs ``clickhouse_figures`` in a child process, which reads
``sink_commits`` (``sinks/migrations/0003_sink_commits.sql``) to date when each
conversion's credit and each KPI window became visible:

    python -m loadtest.measure chdb:///abs/path/clickhouse        # the raw figures as JSON
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from state.device_graph import DeviceState
from state.recovered import live_states
from state.shard_store import row_payload

JOURNEY_STEP = "creditflow.attribute.journey"
"""The recovery-store step id of the per-person journeys (``flows/recovery_check.py``)."""
DEVICE_STEP = "creditflow.identity.device"
"""The step id of the device graph (its keys are devices, some of them persons of their own)."""


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` (0-100) of ``values`` (numpy's default method).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([5.0], 99), percentile([0.0, 10.0], 95)
    (2.5, 5.0, 9.5)
    """
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50/p95/p99, min, max and mean of latencies in seconds (None figures when empty)."""
    if not latencies_s:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "min": None, "max": None, "mean": None}
    return {
        "n": len(latencies_s),
        "p50": round(percentile(latencies_s, 50), 4),
        "p95": round(percentile(latencies_s, 95), 4),
        "p99": round(percentile(latencies_s, 99), 4),
        "min": round(min(latencies_s), 4),
        "max": round(max(latencies_s), 4),
        "mean": round(sum(latencies_s) / len(latencies_s), 4),
    }


def per_second(points: Iterable[tuple[float, float]]) -> list[dict[str, float]]:
    """``(t_s, latency_s)`` points grouped by whole second of ``t``: n, p50 and p99 per second.

    >>> per_second([(0.2, 1.0), (0.7, 3.0), (2.5, 2.0)])
    [{'t': 0, 'n': 2, 'p50': 2.0, 'p99': 2.98}, {'t': 2, 'n': 1, 'p50': 2.0, 'p99': 2.0}]
    """
    buckets: dict[int, list[float]] = {}
    for t, value in points:
        buckets.setdefault(math.floor(t), []).append(value)
    return [
        {"t": t, "n": len(vs), "p50": round(percentile(vs, 50), 4), "p99": round(percentile(vs, 99), 4)}
        for t, vs in sorted(buckets.items())
    ]


def time_of_count(samples: Sequence[tuple[float, int]], count: float) -> float | None:
    """When a cumulative count (``(t, n)`` samples, both ascending) reached ``count``, linearly interpolated.

    >>> time_of_count([(0.0, 0), (1.0, 100), (2.0, 300)], 200)
    1.5
    >>> time_of_count([(0.0, 0), (1.0, 100)], 500) is None
    True
    """
    if not samples or count > samples[-1][1]:
        return None
    prev_t, prev_n = samples[0]
    if count <= prev_n:
        return prev_t
    for t, n in samples[1:]:
        if n >= count:
            return prev_t + (t - prev_t) * (count - prev_n) / (n - prev_n) if n > prev_n else t
        prev_t, prev_n = t, n
    return None


# ---------------------------------------------------------------------- the flow's progress lines

_PROGRESS = re.compile(
    r"(?:\sp(?P<proc>\d+))?\screditflow\.progress INFO (?P<totals>run totals: )?"
    r"(?P<events>\d+) events decoded .*?, (?P<dead>\d+) dead letters"
)


@dataclass(frozen=True)
class Progress:
    process: str
    events: int
    """Events decoded so far by this process (valid ones)."""
    dead: int
    """Records the decoder dead-lettered so far."""
    final: bool
    """The closing ``run totals`` line."""


def parse_progress(line: str) -> Progress | None:
    """A progress or ``run totals`` line of ``operators/progress.py`` (with the ``pN`` prefix of a cluster).

    >>> parse_progress("2026-01-01 10:00:00,000 p1 creditflow.progress INFO 1200 events decoded (600/s), "
    ...                "3 dead letters {'parse_error': 3}")
    Progress(process='p1', events=1200, dead=3, final=False)
    >>> parse_progress("2026-01-01 10:00:00,000 creditflow.progress INFO run totals: 9 events decoded in 1.0 s, "
    ...                "0 dead letters {}")
    Progress(process='p0', events=9, dead=0, final=True)
    >>> parse_progress("2026-01-01 10:00:00,000 creditflow.run INFO started") is None
    True
    """
    m = _PROGRESS.search(line)
    if m is None:
        return None
    return Progress(f"p{m['proc'] or 0}", int(m["events"]), int(m["dead"]), m["totals"] is not None)


@dataclass
class ProgressTally:
    """The latest counts per flow process; ``records`` is all records read (events + dead letters)."""

    latest: dict[str, Progress] = field(default_factory=dict)

    def add(self, p: Progress) -> None:
        self.latest[p.process] = p

    @property
    def events(self) -> int:
        return sum(p.events for p in self.latest.values())

    @property
    def dead(self) -> int:
        return sum(p.dead for p in self.latest.values())

    @property
    def records(self) -> int:
        return self.events + self.dead


# ---------------------------------------------------------------------- /proc

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are still alive (Linux ``/proc``)."""
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out.append(p)
        stack.extend(int(c) for c in children)
    return out


def rss_kib(pid: int) -> int | None:
    """Resident memory of one process (``VmRSS``), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process so far, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15 of stat)


def worker_thread(pid: int) -> int | None:
    """The thread running process ``pid``'s Bytewax worker: ``timely:work-N`` in a cluster process, the
    main thread (``pid``) otherwise; None once the process is gone."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            if Path(f"/proc/{pid}/task/{tid}/comm").read_text().startswith("timely:work"):
                return int(tid)
    except OSError:
        return None
    return pid


def sched_seconds(pid: int, tid: int) -> tuple[float, float] | None:
    """Seconds thread ``tid`` of ``pid`` has so far run on a core, and waited for one while runnable
    (``/proc/.../schedstat``); None when gone or the kernel does not keep scheduler statistics.

    >>> run, waited = sched_seconds(os.getpid(), os.getpid())
    >>> run > 0 <= waited
    True
    """
    try:
        run_ns, wait_ns, _slices = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        return int(run_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):
        return None


def machine_cpu() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine so far (``/proc/stat``), summed over cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields) - idle) / _CLK_TCK, sum(fields) / _CLK_TCK


def process_label(pid: int) -> str:
    """``pN`` for a worker of a flow cluster (``python -m flows.run PAYLOAD N ADDRS``), else ``main``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    if b"flows.run" in argv:
        i = argv.index(b"flows.run")
        if len(argv) > i + 2:
            return f"p{argv[i + 2].decode()}"
    return "main"


# ---------------------------------------------------------------------- py-spy profiles

_PROJECT = ("operators/", "state/", "sinks/", "sources/", "schemas/", "creditflow/", "flows/attribution.py")
_ENTRY = ("creditflow/cli.py", "flows/run.py")
RUNTIME = "(bytewax runtime: scheduling, exchange, snapshots)"


def _frame(frame: str) -> tuple[str, str]:
    """``func (path/to/file.py:12)`` -> ``("path/to/file.py", "func")``."""
    func, _, where = frame.partition(" (")
    return where.rsplit(":", 1)[0], func


def _owner(frames: list[str]) -> tuple[str, str]:
    """The innermost frame in this project's flow code, as (module, function); the runtime or a library else.

    A background thread's sample (its stack starts in ``threading``: the sink's writer, the weights
    poller) is marked ``(thread)``: it runs beside the worker, not in its way.
    """
    background = _frame(frames[0])[0] == "threading.py"
    for frame in reversed(frames):
        module, func = _frame(frame)
        if module.startswith(_PROJECT) and module not in _ENTRY:
            return (f"(thread) {module}" if background else module), func
    module, func = _frame(frames[-1])
    if module in _ENTRY:
        return RUNTIME, ""  # the worker's Python frame itself: time spent in Bytewax's Rust code
    return f"(other: {module})", func


def profile_summary(raw: str, top: int = 15) -> dict[str, Any]:
    r"""Where a py-spy ``--format raw`` profile spent its samples (collapsed stacks ``a;b;c COUNT``).

    Each sample counts for the innermost frame in the flow's own code (time in
    libraries counts for the project function that called them), so it reads
    as "which step of the flow costs what"; time in the worker's own frame is
    Bytewax's Rust runtime; a background thread's module is marked ``(thread)``.
    ``modules`` sums per module, ``functions`` per function.

    >>> p = profile_summary("main (flows/run.py:1);step (operators/a.py:5);loads (json.py:9) 3\n"
    ...                     "main (flows/run.py:1) 1\n"
    ...                     "_bootstrap (threading.py:1);run (sinks/b.py:2) 1\n")
    >>> p["samples"], p["functions"][0]
    (5, ['operators/a.py:step', 0.6])
    >>> p["modules"][1:]
    [['(bytewax runtime: scheduling, exchange, snapshots)', 0.2], ['(thread) sinks/b.py', 0.2]]
    """
    total = 0
    modules: dict[str, int] = {}
    functions: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        module, func = _owner(stack.split(";"))
        total += count
        modules[module] = modules.get(module, 0) + count
        name = f"{module}:{func}" if func else module
        functions[name] = functions.get(name, 0) + count

    def ranked(counts: dict[str, int]) -> list[list[Any]]:
        return [[name, round(n / total, 3)] for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "modules": ranked(modules), "functions": ranked(functions)} if total else {"samples": 0}


# ---------------------------------------------------------------------- the recovery store


def state_size(recovery_dir: Path, step_id: str = JOURNEY_STEP) -> dict[str, Any]:
    """Size of the newest state of ``step_id``: its keys (persons), bytes, bytes per key, plus every step's.

    Keys are state keys (persons, devices, networks, conversion ids), whether
    Bytewax holds them or a sharded step's files do (``state.recovered``). Two
    sizes are given for every step and in total:

    - ``bytes``: each key's state pickled alone, its key left out (no value
      is shared between keys, and each key pays a pickle header);
    - ``stored_bytes``: what the recovery store writes to hold the state once:
      for a sharded step, one full row per shard (the shard's keys and states
      pickled together, ``state.shard_store.row_payload``, so values repeated
      between keys are written once); for a step Bytewax holds, each key's
      state pickled plus its key (Bytewax's row per key). The files hold two to
      three times that (the delta chain, ``state.shard_store``).

    ``bytes_per_person_all_steps`` divides the total by the persons and devices
    held (journey and device-graph keys); ``bytes_per_active_person`` and
    ``stored_bytes_per_active_person`` by the active persons: the identified
    ones (journey keys) and the anonymous ones (device keys linked to no user).
    """
    per_step: dict[str, list[int]] = {}
    stored: dict[str, int] = {}
    shard: dict[str, Any] = {}
    shard_of: tuple[str, str | None] | None = None
    anonymous = 0

    def flush() -> None:
        if shard_of is not None and shard:
            stored[shard_of[0]] = stored.get(shard_of[0], 0) + len(row_payload(shard))
        shard.clear()

    for live in live_states(Path(recovery_dir)):
        if live.step_id.endswith((".source", ".sink")):
            continue
        size = len(pickle.dumps(live.state, protocol=pickle.HIGHEST_PROTOCOL))
        per_step.setdefault(live.step_id, []).append(size)
        if live.shard is None:
            stored[live.step_id] = stored.get(live.step_id, 0) + size + len(live.key.encode("utf-8", "surrogatepass"))
        else:
            if (live.step_id, live.shard) != shard_of:
                flush()
                shard_of = (live.step_id, live.shard)
            shard[live.key] = live.state
        if live.step_id == DEVICE_STEP and not DeviceState(*live.state).user_id:
            anonymous += 1
    flush()
    sizes = per_step.get(step_id, [])
    holders = len(sizes) + len(per_step.get(DEVICE_STEP, []))
    active = len(sizes) + anonymous
    total = sum(sum(v) for v in per_step.values())
    stored_total = sum(stored.values())
    return {
        "step_id": step_id,
        "keys": len(sizes),
        "bytes": sum(sizes),
        "bytes_per_key": round(sum(sizes) / len(sizes), 1) if sizes else None,
        "all_steps": {
            step: {"keys": len(v), "bytes": sum(v), "stored_bytes": stored.get(step, 0)}
            for step, v in sorted(per_step.items())
        },
        "bytes_per_person_all_steps": round(total / holders, 1) if holders else None,
        "active_persons": active,
        "bytes_per_active_person": round(total / active, 1) if active else None,
        "stored_bytes": stored_total,
        "stored_bytes_per_active_person": round(stored_total / active, 1) if active else None,
    }


def sample_state(recovery_dir: Path, step_id: str = JOURNEY_STEP, limit: int = 3) -> list[Any]:
    """A few keys' states of ``step_id`` (to see what a person's state holds)."""
    out: list[Any] = []
    for live in live_states(Path(recovery_dir), step_id):
        out.append(live.state)
        if len(out) >= limit:
            break
    return out


# ---------------------------------------------------------------------- ClickHouse (after the flow)

_COMMITS = (
    "(SELECT batch_at, max(committed_at) AS committed FROM sink_commits WHERE table_name = '{table}' GROUP BY batch_at)"
)


def _first_visible_sql(table: str) -> str:
    """Per conversion in ``table``, its first revision (earliest batch): conversion time, sink batch stamp,
    when that batch's rows were committed, revisions. A restatement is written by a later batch, so the
    earliest stamp over all revisions is when the conversion first became visible."""
    return f"""
SELECT toUnixTimestamp64Milli(c.conv), toUnixTimestamp64Milli(c.scored), toUnixTimestamp64Milli(s.committed),
       c.revisions
FROM (SELECT tenant_id, conversion_id, min(conversion_ts) AS conv, min(scored_at) AS scored,
             uniqExact(revision) AS revisions
      FROM {table} GROUP BY tenant_id, conversion_id) AS c
LEFT JOIN {_COMMITS.format(table=table)} AS s ON c.scored = s.batch_at
"""


CREDIT_SQL = _first_visible_sql("attribution_credits")
"""Per credited conversion, when its credit rows first became visible (``_first_visible_sql``)."""
CONVERSION_SQL = _first_visible_sql("conversions")
"""Per conversion, its first revision, as ``CREDIT_SQL``: one row per conversion however often it was restated."""
KPI_SQL = f"""
SELECT toUnixTimestamp64Milli(k.window_end), toUnixTimestamp64Milli(k.emitted),
       toUnixTimestamp64Milli(s.committed), k.revisions
FROM (SELECT tenant_id, window_start, channel, campaign_id, any(window_end) AS window_end,
             argMin(emitted_at, events) AS emitted, count() AS revisions
      FROM kpi_windows GROUP BY tenant_id, window_start, channel, campaign_id) AS k
LEFT JOIN {_COMMITS.format(table="kpi_windows")} AS s ON k.emitted = s.batch_at
"""
"""Per KPI window, its first revision (fewest events): window end, batch stamp, commit time, revisions."""
BATCH_SQL = """
SELECT table_name, toUnixTimestamp64Milli(batch_at), toUnixTimestamp64Milli(committed_at), rows, replayed,
       toUnixTimestamp64Milli(max_event_at)
FROM sink_commits ORDER BY committed_at
"""
DEAD_SQL = "SELECT reason, count() FROM dead_letters GROUP BY reason ORDER BY reason"
COUNT_SQL = (
    "SELECT 'attribution_credits', count() FROM attribution_credits UNION ALL "
    "SELECT 'conversions', count() FROM conversions UNION ALL "
    "SELECT 'kpi_windows', count() FROM kpi_windows UNION ALL "
    "SELECT 'dead_letters', count() FROM dead_letters"
)
"""Raw rows per table: every revision of a restated conversion or KPI window counts."""


def clickhouse_figures(client: Any) -> dict[str, Any]:
    """The raw rows the report is computed from (epoch ms everywhere; None where no commit row matched)."""

    def rows(sql: str) -> list[list[Any]]:
        return [list(r) for r in client.query(sql).result_rows]

    return {
        "credits": rows(CREDIT_SQL),
        "conversions": rows(CONVERSION_SQL),
        "kpi_windows": rows(KPI_SQL),
        "batches": rows(BATCH_SQL),
        "dead_letters": dict(rows(DEAD_SQL)),
        "row_counts": dict(rows(COUNT_SQL)),
    }


def read_clickhouse(dsn: str, timeout_s: float = 300.0) -> dict[str, Any]:
    """``clickhouse_figures`` of ``dsn``, read in a child process (this process never opens the chDB path)."""
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.measure", dsn],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"reading ClickHouse at {dsn} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _main(argv: Sequence[str]) -> int:
    from sinks.clickhouse_client import connect

    client = connect(argv[0])
    try:
        json.dump(clickhouse_figures(client), sys.stdout, default=str)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
