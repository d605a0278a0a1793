"""Load test of issue 4: live multi-tenant traffic through Redis Streams into the flow, measured end to end.

    creditflow loadtest --rate 10000 --duration 60          # or: python -m loadtest.redis_load ...
    creditflow loadtest --max 600000                        # pre-fill, then measure how fast the flow drains it
    creditflow loadtest --max 300000 --compare-processes 1,2

One command, one work directory (``loadtest/out/load-<UTC time>/`` or ``--out``)
holding its own ``redis-server``, a fresh embedded ClickHouse and recovery
store per run, the logs, ``report.json`` and ``report.png``.

1. Traffic (``loadtest/traffic.py``): persons of skewed tenants with
   impressions, clicks, page views with UTMs, conversions and ad spend, each
   event on its device's stream of ``--partitions`` (``operators.routing``:
   with N processes dividing the streams, a device's events are read in the
   process that holds its state; ``--partition-by person`` puts a person's
   events on one stream instead), written once as a schedule file and replayed identically for every run.
2. The flow runs as real processes, ``creditflow run --processes N`` with
   recovery on and the default snapshot interval, reading the streams.
3. ``rate`` mode: the flow is started, its sources seen polling Redis, and
   its ClickHouse sink opened by one primer record (a dead letter). Then a
   publisher process (``loadtest/publisher.py``) XADDs the schedule at
   ``--rate`` for ``--duration`` seconds, each event stamped with its publish
   time. When everything published has been read and a short grace has let
   the last KPI windows close, the flow is stopped with SIGINT (it reads Redis
   forever otherwise). ``max`` mode: ``--max N`` events are published first,
   then the flow runs with ``stop_at_end=1`` and exits once it has drained them.
4. Once a second a progress line: published, read by the flow (its progress
   log lines, ``--progress-every 0``: every batch), lag, RSS per process.
5. After the flow exits: latencies from ClickHouse's ``sink_commits``, state
   size from the recovery store (``loadtest/measure.py``); the report and its
   picture (``loadtest/load_report.py``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import redis

from creditflow.native import status as native_status
from creditflow.stop_signals import StopRequested, stop_signals_raise
from flows.run import RunSettings
from loadtest.load_report import (
    RunRecord,
    Targets,
    comparison,
    overall,
    repeatability,
    run_figures,
    settings_dict,
    write_json,
    write_png,
)
from loadtest.measure import (
    ProgressTally,
    cpu_seconds,
    machine_cpu,
    parse_progress,
    process_label,
    process_tree,
    profile_summary,
    read_clickhouse,
    rss_kib,
    sched_seconds,
    state_size,
    worker_thread,
)
from loadtest.redis_server import RedisProcess, start_on_free_port
from loadtest.traffic import LOAD_TENANTS, TrafficSettings, write_schedule

OUT = Path(__file__).resolve().parent / "out"
REPO = Path(__file__).resolve().parent.parent
SIGINT_WAIT_S = 10.0
PRIMER = b'{"loadtest":"primer: a dead letter that makes the flow open its ClickHouse sink"}'

Say = Callable[[str], None]


@dataclass(frozen=True)
class LoadSettings:
    rate: float = 10_000.0
    """Events per second published while the flow runs (``rate`` mode)."""
    duration_s: float = 60.0
    max_events: int | None = None
    """``max`` mode: pre-fill this many events, then measure how fast the flow drains them."""
    processes: tuple[int, ...] = (1,)
    """Flow process counts to run, one run each (``--compare-processes 1,2``)."""
    repeat: int = 1
    """Runs per process count (``--repeat N``): the report says in how many every target was met, with medians."""
    partitions: int = 4
    partition_by: Literal["device", "person"] = "device"
    """Which stream an event goes to (``loadtest.traffic``): its device's (aligned with the flow's state), or
    its person's (``--partition-by person``: a producer that knows nothing of the flow's layout)."""
    tenants: tuple[str, ...] = LOAD_TENANTS
    seed: int = 1
    journey_s: float = 30.0
    bad_fraction: float = 0.001
    warmup_s: float = 5.0
    """Rate mode: the first seconds of publishing are not judged (the flow's first batches, JIT of caches)."""
    window_s: float = 5.0
    """The flow's KPI window length (``--window-seconds``)."""
    lateness_ms: int = 2_000
    """The flow's allowed lateness (``--allowed-lateness-ms``): a window closes this long after its end."""
    snapshot_interval_s: int = RunSettings.snapshot_interval_s
    """The flow's recovery snapshot interval (``--snapshot-interval``); the flow's own default unless asked."""
    backup_interval_s: int = RunSettings.backup_interval_s
    """How long the flow keeps superseded snapshots (``--backup-interval``); the flow's own default unless asked."""
    gather_ms: int | None = None
    """How often a caught-up stream is read (``--gather-ms``: the source's ``gather_ms``); None: its default."""
    grace_s: float = 3.0
    """Rate mode: once everything was read, how long the sink must have been idle before the flow is stopped."""
    drain_timeout_s: float = 300.0
    profile_s: float = 0.0
    """Record a py-spy profile of each flow process for this many seconds of the steady part (0: none)."""
    out: Path | None = None
    targets: Targets = field(default_factory=Targets)

    def __post_init__(self) -> None:
        if self.max_events is None and (self.rate <= 0 or self.duration_s <= 0):
            raise ValueError("--rate and --duration must be > 0")
        if self.max_events is not None and self.max_events < 1:
            raise ValueError("--max must be >= 1")
        if not self.processes or min(self.processes) < 1:
            raise ValueError("process counts must be >= 1")
        if self.repeat < 1:
            raise ValueError(f"--repeat must be >= 1 (got {self.repeat})")

    @property
    def mode(self) -> str:
        return "max" if self.max_events is not None else "rate"

    @property
    def events(self) -> int:
        return self.max_events if self.max_events is not None else round(self.rate * self.duration_s)

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(f"load{i}" for i in range(self.partitions))


# ---------------------------------------------------------------------- child processes and their output


class _FlowLog:
    """Reads the flow's merged output: appends it to ``flow.log`` and tallies its progress lines."""

    def __init__(self, proc: subprocess.Popen[str], log_path: Path) -> None:
        self.tally = ProgressTally()
        self.samples: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        self.tail: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc.stdout, log_path), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str] | None, log_path: Path) -> None:
        if stream is None:
            return
        with log_path.open("a") as log:
            for line in stream:
                now = time.time()
                log.write(line)
                progress = parse_progress(line)
                with self.lock:
                    self.tail = (self.tail + [line])[-40:]
                    if progress is not None:
                        self.tally.add(progress)
                        self.samples.append((now, self.tally.records))

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)

    @property
    def records(self) -> int:
        with self.lock:
            return self.tally.records


class _PublisherProc:
    """The publisher child process and its JSON status lines."""

    def __init__(self, s: LoadSettings, url: str, schedule: Path, rate: float, offset: int, log_dir: Path) -> None:
        cmd = [
            sys.executable, "-m", "loadtest.publisher",
            "--redis", url, "--schedule", str(schedule), "--streams", ",".join(s.streams),
            "--events", str(s.events), "--rate", str(rate),
        ]  # fmt: skip
        self.offset = offset
        """Records published before this process (the primer): added to its counts."""
        self.samples: list[tuple[float, int]] = []
        self.started: dict[str, Any] | None = None
        self.done: dict[str, Any] | None = None
        self.lock = threading.Lock()
        with (log_dir / "publisher.err").open("w") as err:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self.lock:
                if msg["event"] == "started":
                    self.started = msg
                    self.samples.append((msg["t0"], self.offset))
                elif msg["event"] in ("status", "done"):
                    self.samples.append((msg["t"], self.offset + msg["published"]))
                    if msg["event"] == "done":
                        self.done = msg

    @property
    def published(self) -> int:
        with self.lock:
            return self.samples[-1][1] if self.samples else self.offset

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        code = self.proc.wait(timeout=timeout)
        self._thread.join(10)
        if code != 0 or self.done is None:
            raise RuntimeError(f"the publisher exited with {code}; see publisher.err in the run directory")
        return self.done


def _flow_cmd(s: LoadSettings, url: str, run_dir: Path, processes: int) -> list[str]:
    source = f"{url}?streams={','.join(s.streams)}" + ("&stop_at_end=1" if s.mode == "max" else "")
    if s.gather_ms is not None:
        source += f"&gather_ms={s.gather_ms}"
    return [
        sys.executable, "-m", "creditflow.cli", "run", "--no-summary",
        "--source", source,
        "--processes", str(processes),
        "--clickhouse", f"chdb://{run_dir / 'clickhouse'}",
        "--recovery-dir", str(run_dir / "recovery"),
        "--data-dir", str(run_dir),
        "--window-seconds", str(s.window_s),
        "--allowed-lateness-ms", str(s.lateness_ms),
        "--snapshot-interval", str(s.snapshot_interval_s),
        "--backup-interval", str(s.backup_interval_s),
        "--progress-every", "0",
    ]  # fmt: skip


# ---------------------------------------------------------------------- one run


class _Run:
    """One run of the flow with ``processes`` processes under the load of ``s``."""

    def __init__(self, s: LoadSettings, processes: int, server: RedisProcess, schedule: Path, run_dir: Path, say: Say):
        self.s = s
        self.server = server
        self.schedule = schedule
        self.dir = run_dir
        self.say = say
        self.client = redis.Redis.from_url(server.url)
        self.record = RunRecord(
            processes=processes, mode=s.mode, rate=s.rate, warmup_s=s.warmup_s, lateness_ms=s.lateness_ms
        )
        self.flow: subprocess.Popen[str] | None = None
        self.flow_log: _FlowLog | None = None
        self.publisher: _PublisherProc | None = None
        self.profilers: dict[str, subprocess.Popen[bytes]] = {}
        self._last_line = 0.0

    # -- pieces

    def start_flow(self) -> None:
        self.record.timings["flow_start"] = time.time()
        self.flow = subprocess.Popen(
            _flow_cmd(self.s, self.server.url, self.dir, self.record.processes),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: SIGINT reaches every process of the cluster
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.flow_log = _FlowLog(self.flow, self.dir / "flow.log")

    def flow_alive(self) -> bool:
        return self.flow is not None and self.flow.poll() is None

    def _fail(self, what: str) -> RuntimeError:
        tail = "".join(self.flow_log.tail) if self.flow_log else ""
        return RuntimeError(f"{what}; flow log tail:\n{tail}")

    def wait_until(self, what: str, ready: Callable[[], bool], timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not self.flow_alive() and self.flow is not None:
                raise self._fail(f"the flow exited ({self.flow.returncode}) while waiting for {what}")
            if time.monotonic() > deadline:
                raise self._fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
            self.tick()
            time.sleep(0.05)
        return time.time()

    def sources_polling(self) -> bool:
        readers = sum(1 for c in self.client.client_list() if c.get("cmd") == "xread")
        return readers >= len(self.s.streams)

    def sink_commits_logged(self) -> int:
        """How many sink batches have committed so far, read from chDB's files (the flow holds the database).

        Each batch inserts one block into ``sink_commits``; its data parts are
        named ``all_<min block>_<max block>_<level>``, so the highest block
        number is the number of batches (merges keep it).
        """
        table = self.dir / "clickhouse" / "data" / "default" / "sink_commits"
        blocks = [0]
        if table.is_dir():
            for part in table.iterdir():
                fields = part.name.split("_")
                if fields[0] == "all" and len(fields) >= 4 and fields[2].isdigit():
                    blocks.append(int(fields[2]))
        return max(blocks)

    def sink_open(self) -> bool:
        """The first sink batch committed."""
        return self.sink_commits_logged() > 0

    def wait_sink_quiet(self, quiet_s: float, timeout_s: float) -> None:
        """Wait until no sink batch has committed for ``quiet_s`` (the last rows are in ClickHouse)."""
        last, since = self.sink_commits_logged(), time.monotonic()
        deadline = since + timeout_s
        while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
            self.tick()
            time.sleep(0.1)
            now = self.sink_commits_logged()
            if now != last:
                last, since = now, time.monotonic()

    def sample(self) -> dict[str, Any]:
        rss: dict[str, int] = {}
        cpu: dict[str, float] = {}
        sched: dict[str, tuple[float, float]] = {}  # the worker thread's (run, wait for a core) seconds
        if self.flow is not None:
            for pid in process_tree(self.flow.pid):
                label = process_label(pid)
                if label == "main" and self.record.processes == 1:
                    label = "p0"  # one process runs the worker itself
                kib, used = rss_kib(pid), cpu_seconds(pid)
                if kib is not None and used is not None:
                    rss[label], cpu[label] = kib, used
                if label != "main" and (tid := worker_thread(pid)) is not None:
                    if (times := sched_seconds(pid, tid)) is not None:
                        sched[label] = times
        try:
            redis_bytes = int(self.client.info("memory")["used_memory"])
        except redis.RedisError:
            redis_bytes = 0
        published = self.publisher.published if self.publisher else self.record.published_total
        processed = self.flow_log.records if self.flow_log else 0
        helpers = {"publisher": self.publisher.proc.pid if self.publisher else None, "redis": None}
        if self.server.proc is not None:
            helpers["redis"] = self.server.proc.pid
        helper_cpu = {k: used for k, pid in helpers.items() if pid and (used := cpu_seconds(pid)) is not None}
        busy, total = machine_cpu()
        m = {"t": time.time(), "published": published, "processed": processed, "rss_kib": rss, "cpu_s": cpu}
        m["worker_sched_s"] = sched
        m.update(redis_bytes=redis_bytes, machine_busy_s=busy, machine_total_s=total, helper_cpu_s=helper_cpu)
        return m

    def tick(self) -> None:
        """Once a second: a monitor sample and a progress line."""
        now = time.monotonic()
        if now - self._last_line < 1.0:
            return
        self._last_line = now
        m = self.sample()
        prev = self.record.monitor[-1] if self.record.monitor else None
        self.record.monitor.append(m)
        dt = m["t"] - prev["t"] if prev else 1.0
        pub_rate = (m["published"] - prev["published"]) / dt if prev else 0.0
        read_rate = (m["processed"] - prev["processed"]) / dt if prev else 0.0
        rss = " ".join(f"{k} {v / 1024:.0f}" for k, v in sorted(m["rss_kib"].items()))
        t = m["t"] - (self.record.t0 or self.record.timings["flow_start"] or m["t"])
        self.say(
            f"  t={t:6.1f}s published {m['published']:>9,} ({pub_rate:>7,.0f}/s)  read {m['processed']:>9,} "
            f"({read_rate:>7,.0f}/s)  lag {max(0, m['published'] - m['processed']):>8,} ev  RSS MiB {rss}"
        )

    def start_profiles(self, delay_s: float) -> None:
        """py-spy on every flow worker from ``delay_s`` from now, for ``profile_s`` seconds (if py-spy is there)."""
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if not self.s.profile_s or self.flow is None:
            return
        if spy is None:
            self.say("  --profile: py-spy is not installed (pip install py-spy); no profile")
            return
        end = time.monotonic() + delay_s
        while time.monotonic() < end:
            self.tick()
            time.sleep(0.05)
        for pid in process_tree(self.flow.pid):
            label = process_label(pid)
            if label == "main" and self.record.processes > 1:
                continue  # the launcher of a cluster only waits
            label = "p0" if label == "main" else label
            cmd = [spy, "record", "--pid", str(pid), "--rate", "50", "--duration", str(int(self.s.profile_s))]
            cmd += ["--format", "raw", "--nonblocking", "--output", str(self.dir / f"profile-{label}.txt")]
            self.profilers[label] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.say(f"  profiling {', '.join(self.profilers)} with py-spy for {self.s.profile_s:.0f} s")
        if native_status().mode == "native":
            self.say("  note: py-spy sees no compiled frame; callers get their time (CREDITFLOW_PURE=1)")

    def profiles(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for label, proc in self.profilers.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            path = self.dir / f"profile-{label}.txt"
            out[label] = profile_summary(path.read_text()) if path.exists() else {"samples": 0}
        return out

    def stop_flow(self, how: str) -> None:
        assert self.flow is not None
        if self.flow.poll() is None:
            os.killpg(self.flow.pid, signal.SIGINT)
            try:
                self.flow.wait(timeout=SIGINT_WAIT_S)
            except subprocess.TimeoutExpired:
                # Seen with a loaded chDB sink: SIGINT is not acted on. Every row is in ClickHouse by now
                # (the sink was idle), and chDB's inserts are synchronous, so SIGKILL loses nothing.
                os.killpg(self.flow.pid, signal.SIGKILL)
                self.flow.wait()
                how += f", then SIGKILL (SIGINT did not stop it in {SIGINT_WAIT_S:.0f} s)"
        self.record.flow_exit = f"{how}; exit code {self.flow.returncode}"
        self.record.timings["flow_exit"] = time.time()

    # -- the two modes

    def run_rate(self) -> None:
        s, r = self.s, self.record
        self.start_flow()
        r.timings["sources_polling"] = self.wait_until("the flow's sources to poll Redis", self.sources_polling, 120)
        self.client.xadd(s.streams[0], {b"data": PRIMER})
        r.published_total = 1
        r.timings["sink_open"] = self.wait_until("the primer record to reach ClickHouse", self.sink_open, 120)
        self.publisher = _PublisherProc(s, self.server.url, self.schedule, s.rate, 1, self.dir)
        self.wait_until(
            "the publisher to start", lambda: self.publisher is not None and bool(self.publisher.started), 60
        )
        assert self.publisher.started is not None
        r.t0 = r.timings["publish_start"] = self.publisher.started["t0"]
        self.say(f"  publishing {s.events:,} events at {s.rate:,.0f}/s")
        self.start_profiles(min(s.warmup_s, s.duration_s / 4))
        while self.publisher.proc.poll() is None:
            self.tick()
            time.sleep(0.05)
        r.publisher = self.publisher.wait()
        r.t_end = r.timings["publish_end"] = r.publisher["t"]
        r.published_total = 1 + r.publisher["published"]
        self.say(f"  published {r.published_total:,} records; waiting for the flow to read them all")
        r.timings["all_read"] = self.wait_until(
            "the flow to read everything published",
            lambda: self.flow_log is not None and self.flow_log.records >= r.published_total,
            self.s.drain_timeout_s,
        )
        self.wait_sink_quiet(s.grace_s, self.s.drain_timeout_s)
        r.timings["sink_quiet"] = time.time()
        self.stop_flow(f"stopped with SIGINT once it had read everything and its sink had been idle {s.grace_s:.0f} s")

    def run_max(self) -> None:
        s, r = self.s, self.record
        self.publisher = _PublisherProc(s, self.server.url, self.schedule, 0.0, 0, self.dir)
        self.say(f"  pre-filling {s.events:,} events")
        r.publisher = self.publisher.wait()
        r.published_total = r.publisher["published"]
        r.timings["publish_start"], r.timings["publish_end"] = r.publisher["t0"], r.publisher["t"]
        self.say(f"  pre-filled in {r.publisher['elapsed_s']:.1f} s; starting the flow")
        self.start_flow()
        assert self.flow is not None
        r.t0 = r.timings["flow_start"] or time.time()
        self.start_profiles(5.0)
        deadline = time.monotonic() + s.drain_timeout_s
        while self.flow.poll() is None and time.monotonic() < deadline:
            self.tick()
            time.sleep(0.05)
        if self.flow.poll() is None:
            self.stop_flow(f"did not drain within {s.drain_timeout_s:.0f} s; stopped with SIGINT")
        else:
            r.flow_exit = f"exited by itself at the end of the streams; exit code {self.flow.returncode}"
            r.timings["flow_exit"] = time.time()
        r.t_end = r.timings["flow_exit"] or time.time()

    def finish(self) -> dict[str, Any]:
        """Read the results once the flow is gone, and compute the run's figures."""
        assert self.flow_log is not None
        self.flow_log.join()
        r = self.record
        r.pub_samples = list(self.publisher.samples) if self.publisher else []
        r.progress_samples = list(self.flow_log.samples)
        r.final_counts = {
            p.process: {"events": p.events, "dead": p.dead}
            for p in sorted(self.flow_log.tally.latest.values(), key=str)
        }
        self.client.close()
        self.say("  reading ClickHouse and the recovery store")
        ch = read_clickhouse(f"chdb://{self.dir / 'clickhouse'}")
        state = state_size(self.dir / "recovery")
        (self.dir / "clickhouse-figures.json").write_text(json.dumps(ch, default=str))
        figures = run_figures(r, ch, state, self.s.targets)
        if self.profilers:
            figures["profile"] = self.profiles()
        return figures


def run_once(s: LoadSettings, processes: int, server: RedisProcess, schedule: Path, run_dir: Path, say: Say) -> dict:
    """One run on an empty Redis and a fresh ClickHouse and recovery store; its figures."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.close()
    run = _Run(s, processes, server, schedule, run_dir, say)
    try:
        run.run_rate() if s.mode == "rate" else run.run_max()
    finally:
        if run.flow is not None and run.flow.poll() is None:
            run.stop_flow("stopped with SIGINT after an error in the load test")
        if run.publisher is not None and run.publisher.proc.poll() is None:
            run.publisher.proc.kill()
    return run.finish()


# ---------------------------------------------------------------------- the whole test


CALIBRATION_LOOP = 10_000_000
"""Iterations of ``python_loop_s``: a fixed pure-Python workload, so runs on different machines can be compared."""


def python_loop_s(repeats: int = 3) -> float:
    """Median seconds this machine takes for ``sum(i * i for i in range(CALIBRATION_LOOP))`` on one core.

    The flow's one worker thread is CPU-bound Python, so its events/s move with the inverse of this figure.

    >>> 0 < python_loop_s(repeats=1) < 60
    True
    """
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        sum(i * i for i in range(CALIBRATION_LOOP))
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


def machine_info(server: RedisProcess) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    client = redis.Redis.from_url(server.url)
    try:
        redis_version = client.info("server").get("redis_version")
    finally:
        client.close()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        commit = ""
    mem_kib = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "loadavg_at_start": os.getloadavg(),
        "python_loop_s": python_loop_s(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {d: version(d) for d in ("bytewax", "chdb", "clickhouse-connect", "redis", "orjson", "creditflow")},
        "redis_server": redis_version,
        "git_commit": commit or None,
        "native": f"{native_status().mode}: {native_status().reason}",
    }


def default_out() -> Path:
    return OUT / f"load-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"


def run_load(s: LoadSettings, say: Say = print, argv: Sequence[str] | None = None) -> Path:
    """Run the load test; returns the path of ``report.json`` (``report.png`` is beside it).

    SIGTERM or SIGINT raises ``StopRequested`` (``creditflow.stop_signals``) after the flow, the
    publisher and the redis-server it started are stopped.
    """
    with stop_signals_raise():
        return _run_load(s, say, argv)


def _run_load(s: LoadSettings, say: Say, argv: Sequence[str] | None) -> Path:
    work = (s.out or default_out()).resolve()
    work.mkdir(parents=True, exist_ok=True)
    traffic = TrafficSettings(
        events=s.events,
        rate=s.rate,
        partitions=s.partitions,
        partition_by=s.partition_by,
        tenants=s.tenants,
        seed=s.seed,
        journey_s=s.journey_s,
        bad_fraction=s.bad_fraction,
    )
    say(
        f"loadtest: generating {s.events:,} events ({s.partitions} streams by {s.partition_by}, "
        f"tenants {', '.join(s.tenants)})"
    )
    started = time.monotonic()
    summary = write_schedule(traffic, work / "schedule.traffic")
    say(f"  {summary.persons:,} persons, {dict(summary.by_type)} in {time.monotonic() - started:.1f} s")
    server = start_on_free_port(work / "redis")
    runs: list[dict[str, Any]] = []
    try:
        machine = machine_info(server)
        say(f"  machine: {machine['cores']} cores; one core runs the calibration loop in {machine['python_loop_s']} s")
        say(f"  flow code: {machine['native']}")
        for processes in s.processes:
            for i in range(1, s.repeat + 1):
                nth = f", run {i} of {s.repeat}" if s.repeat > 1 else ""
                say(f"run: {processes} flow process(es), {s.mode} mode{nth}")
                run_dir = work / (f"run-p{processes}" + (f"-{i}" if s.repeat > 1 else ""))
                runs.append(run_once(s, processes, server, work / "schedule.traffic", run_dir, say))
                if s.repeat > 1:
                    runs[-1]["repeat"] = i
                _say_run(runs[-1], say)
    finally:
        server.stop()
        (work / "schedule.traffic").unlink(missing_ok=True)  # ~0.5 KB per event; the same settings regenerate it
    machine["loadavg_at_end"] = os.getloadavg()
    report: dict[str, Any] = {
        "command": list(argv) if argv is not None else sys.argv,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": settings_dict(s),
        "machine": machine,
        "traffic": summary.as_dict(),
        "targets": overall(runs),
        "repeatability": repeatability(runs) if s.repeat > 1 else None,
        "comparison": comparison(runs),
        "runs": runs,
    }
    json_path = write_json(report, work / "report.json")
    title = f"creditflow load test: {s.mode} mode, " + (
        f"{s.rate:,.0f} events/s for {s.duration_s:.0f} s" if s.mode == "rate" else f"{s.events:,} events pre-filled"
    )
    png_path = write_png(runs, work / "report.png", title)
    say(f"targets: {report['targets']}")
    for processes, r in (report["repeatability"] or {}).items():
        say(
            f"repeat, {processes} proc: every target met in {r['met_every_target']} of {r['runs']} runs; medians: "
            f"{r['median_sustained_events_per_s']} events/s, conversion->credit p99 "
            f"{r['median_p99_conversion_to_credit_s']} s, window close->KPI p99 {r['median_p99_window_close_to_kpi_s']}"
            f" s, worker thread {r['median_worker_cpu_us_per_event']} us of CPU per event"
        )
    if report["comparison"]:
        say(f"throughput ratio vs {s.processes[0]} process(es): {report['comparison']['ratio_vs_first']}")
    say(f"report: {json_path}\npicture: {png_path}")
    return json_path


def _worker_text(shares: dict[str, dict[str, float]]) -> str:
    """``p0 running 0.86, waiting for a core 0.04, blocked 0.10`` for each process."""
    if not shares:
        return "not measured (no /proc/<pid>/task/<tid>/schedstat on this kernel, or too short a run)"
    return "; ".join(
        f"{label} running {s['running']}, waiting for a core {s['waiting_for_core']}, blocked {s['blocked']}"
        for label, s in sorted(shares.items())
    )


def _say_run(f: dict[str, Any], say: Say) -> None:
    conv, kpi = f["latency"]["conversion_to_credit_s"], f["latency"]["window_close_to_kpi_s"]
    say(
        f"  {f['processes']} proc: sustained {f['throughput']['sustained_events_per_s']} events/s; "
        f"conversion->credit p50/p99 {conv['p50']}/{conv['p99']} s; "
        f"window close->KPI p50/p99 {kpi['p50']}/{kpi['p99']} s; "
        f"max lag {f['lag']['max_s']} s / {f['lag']['max_events']} events; "
        f"peak RSS {f['resources']['peak_rss_mib']} MiB; state {f['state']['bytes_per_person']} B/journey, "
        f"{f['state'].get('bytes_per_person_all_steps')} B/person or device, "
        f"{f['state'].get('bytes_per_active_person')} B/active person all steps "
        f"({f['state'].get('stored_bytes_per_active_person')} B as the store holds it); "
        f"machine busy {f['resources']['machine_busy_cores_steady']} cores, flow {f['resources']['cpu_cores_steady']}"
        f"; worker thread {_worker_text(f['resources']['worker_thread_steady'])}"
    )


# ---------------------------------------------------------------------- command line


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``creditflow loadtest`` (and ``python -m loadtest.redis_load``)."""
    ap.add_argument("--rate", type=float, default=10_000.0, help="events/s published while the flow runs (%(default)s)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of publishing (%(default)s)")
    ap.add_argument(
        "--max", type=int, metavar="N", help="pre-fill N events, then measure how fast the flow drains them"
    )
    ap.add_argument("--processes", "-p", type=int, default=1, help="flow processes (%(default)s)")
    ap.add_argument(
        "--compare-processes", metavar="N,M", help="run the same load once per process count, e.g. 1,2, and compare"
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run each process count N times and report in how many every target was met, with medians (%(default)s)",
    )
    ap.add_argument("--partitions", type=int, default=4, help="Redis streams (%(default)s)")
    ap.add_argument(
        "--partition-by",
        choices=("device", "person"),
        default="device",
        help="an event's stream: its device's, where the flow's process holds its state, or its person's (%(default)s)",
    )
    ap.add_argument("--tenants", default=",".join(LOAD_TENANTS), help="comma-separated, most traffic first")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--journey-seconds", type=float, default=30.0, help="one person's journey spans this (%(default)s)")
    ap.add_argument("--bad-fraction", type=float, default=0.001, help="share of events with a broken copy")
    ap.add_argument("--warmup", type=float, default=5.0, help="rate mode: seconds not judged at the start")
    ap.add_argument("--window-seconds", type=float, default=5.0, help="the flow's KPI window (%(default)s)")
    ap.add_argument("--allowed-lateness-ms", type=int, default=2000, help="the flow's KPI lateness (%(default)s)")
    ap.add_argument(
        "--snapshot-interval",
        type=int,
        default=RunSettings.snapshot_interval_s,
        help="the flow's recovery snapshot interval, whole seconds (%(default)s, the flow's default)",
    )
    ap.add_argument(
        "--backup-interval",
        type=int,
        default=RunSettings.backup_interval_s,
        help="seconds the flow keeps superseded snapshots (%(default)s, the flow's default)",
    )
    ap.add_argument(
        "--gather-ms",
        type=int,
        help="how often a caught-up stream is read, in ms (the source's default: sources/redis_streams.py); "
        "0 reads again at once",
    )
    ap.add_argument(
        "--drain-timeout",
        type=float,
        help="longest wait for the flow to read all (default 300 s, or N / 5000 s for a larger --max N)",
    )
    ap.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="py-spy profile of each flow process (if installed)",
    )
    ap.add_argument("--out", type=Path, help="work directory (default loadtest/out/load-<UTC time>)")


def default_drain_timeout_s(max_events: int | None) -> float:
    """300 s, or longer for a large ``--max``: 5,000 events/s at the least (well under one process's drain rate).

    >>> default_drain_timeout_s(None), default_drain_timeout_s(600_000), default_drain_timeout_s(3_700_000)
    (300.0, 300.0, 740.0)
    """
    return max(300.0, (max_events or 0) / 5_000)


def settings_from_args(args: argparse.Namespace) -> LoadSettings:
    processes = (
        tuple(int(p) for p in args.compare_processes.split(",") if p) if args.compare_processes else (args.processes,)
    )
    return LoadSettings(
        rate=args.rate,
        duration_s=args.duration,
        max_events=args.max,
        processes=processes,
        repeat=args.repeat,
        partitions=args.partitions,
        partition_by=args.partition_by,
        tenants=tuple(t for t in args.tenants.split(",") if t),
        seed=args.seed,
        journey_s=args.journey_seconds,
        bad_fraction=args.bad_fraction,
        warmup_s=args.warmup,
        window_s=args.window_seconds,
        lateness_ms=args.allowed_lateness_ms,
        snapshot_interval_s=args.snapshot_interval,
        backup_interval_s=args.backup_interval,
        gather_ms=args.gather_ms,
        drain_timeout_s=args.drain_timeout if args.drain_timeout is not None else default_drain_timeout_s(args.max),
        profile_s=args.profile,
        out=args.out,
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m loadtest.redis_load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(ap)
    return run_from_args(ap.parse_args(argv), sys.argv if argv is None else list(argv))


def run_from_args(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run the load test the parsed ``args`` describe (``argv`` goes into the report); the exit code."""
    try:
        run_load(settings_from_args(args), argv=argv)
    except StopRequested as stop:
        print(f"loadtest: {stop}; its flow, publisher and redis-server were stopped", file=sys.stderr)
        return stop.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
