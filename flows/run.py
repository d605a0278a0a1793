"""Run the attribution flow in one process or as a cluster of processes.

Bytewax threads do not scale on CPython (the GIL); separate processes do. With
``processes > 1`` this module starts that many copies of itself, each running
one Bytewax worker of the same cluster on loopback ports, and waits for all.

ClickHouse writes go through one sink partition, so exactly one of the
processes opens the (embedded chDB) data path; see ``sinks.clickhouse``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bytewax._bytewax import cli_main
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.recovery import RecoveryConfig, init_db_dir

from creditflow.channels import compile_rules
from creditflow.config import TenantConfigs
from creditflow.errors import CreditflowError
from creditflow.forgotten import ForgottenIds
from creditflow.native import status as native_status
from creditflow.pii import pii_hasher_from
from creditflow.stop_signals import StopRequested, stop_signals_raise
from creditflow.weights import NoWeights
from creditflow.weights_store import LOG_STREAM, RedisWeights
from flows.attribution import FLOW_ID, FlowSettings, build_flow
from flows.gc_policy import tune_gc
from flows.recovery_check import (
    check_recovery_store,
    check_source_partitions,
    move_store_aside,
    record_store_layout,
)
from flows.source_spec import parse_source_spec
from operators.progress import ProgressCounter
from operators.sharded import ShardedState
from sinks.clickhouse import ClickHouseSink
from sinks.clickhouse_client import ClickHouseSettings
from sinks.parquet_archive import ArchiveSettings, ParquetArchiveSink
from sources.redis_streams import RedisStreamSource
from state.kpi_windows import WindowSettings

log = logging.getLogger("creditflow.run")


@dataclass(frozen=True)
class RunSettings:
    """What ``creditflow run`` was asked to do."""

    source: str
    clickhouse_dsn: str
    tenants_file: str | None = None
    recovery_dir: str | None = None
    """Bytewax recovery store; None runs without recovery."""
    recovery_partitions: int = 4
    """Partitions created in a new recovery store: at least the most processes you will ever run."""
    processes: int = 1
    snapshot_interval_s: int = 5
    """Seconds between snapshots (Bytewax epochs). 1 s halves throughput here; 5 s costs little."""
    backup_interval_s: int = 30
    """Seconds Bytewax keeps superseded snapshots (lets a lagging partition still find a consistent epoch)."""
    window_ms: int = 5_000
    allowed_lateness_ms: int = 2_000
    restate_horizon_ms: int = 600_000
    """How long a closed KPI window still takes late events (restated rows); see ``state.kpi_windows``."""
    progress_every_s: float = 2.0
    fresh_state: bool = False
    """Move an existing recovery store aside to ``<dir>.old-<timestamp>`` and start every stateful step empty."""
    archive_uri: str | None = None
    """Parquet archive of closed journeys (directory or pyarrow filesystem URI); None keeps none."""
    weights_url: str | None = None
    """Redis with the published model weights: followed live, and its ``weights:log`` copied to ClickHouse."""
    weights_poll_s: float = 0.25
    archive_flush_s: float = 10.0
    """Archived journeys wait at most about this long (while items flow) before they are written as a file."""
    pii_key_file: str | None = None
    """Secret key file for hashing emails and phones (created, mode 0600, when missing); every process of a
    cluster reads the same file. ``CREDITFLOW_PII_KEY`` (hex) overrides it; neither hashes with a public key."""
    suppression_file: str | None = None
    """Set by ``run`` for the processes of a cluster: the suppression list read once from ClickHouse (JSON
    pairs of tenant and hash); ``None``: each process reads ClickHouse itself (one process)."""

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise CreditflowError(f"--processes must be >= 1 (got {self.processes})")
        if self.snapshot_interval_s < 1:
            raise CreditflowError(
                f"--snapshot-interval must be a whole number of seconds >= 1 (got {self.snapshot_interval_s})"
            )
        parse_source_spec(self.source)

    def flow_settings(self, live: bool = True) -> FlowSettings:
        """What the flow is built with; ``live=False`` (a flow only checked, never run) follows no weights
        and reads no suppression list."""
        configs = TenantConfigs.load(self.tenants_file) if self.tenants_file else TenantConfigs()
        for cfg in (configs.defaults, *configs.tenants.values()):
            compile_rules(cfg.channel_rules)  # a bad regex stops the run here, not mid-stream
        pii = pii_hasher_from(Path(self.pii_key_file) if self.pii_key_file else None)
        forgotten = ForgottenIds(pii.tenant_salt, self._suppression_list() if live else ())
        if forgotten:
            log.info("suppression list: %d erased person keys of %d tenants", len(forgotten), len(forgotten.tenants()))
        return FlowSettings(
            configs=configs,
            windows=WindowSettings(
                length_ms=self.window_ms,
                allowed_lateness_ms=self.allowed_lateness_ms,
                restate_horizon_ms=self.restate_horizon_ms,
            ),
            progress=ProgressCounter(self.progress_every_s),
            pii=pii,
            weights=(
                RedisWeights(self.weights_url, poll_s=self.weights_poll_s) if self.weights_url and live else NoWeights()
            ),
            forgotten=forgotten,
            shards=ShardedState(Path(self.recovery_dir), recoverable=True)
            if self.recovery_dir
            else ShardedState(recoverable=False),
        )

    def _suppression_list(self) -> list[tuple[str, str]]:
        if self.suppression_file is not None:
            return [(tenant, id_hash) for tenant, id_hash in json.loads(Path(self.suppression_file).read_text())]
        return read_suppression_list(self.clickhouse_dsn)


def read_suppression_list(dsn: str) -> list[tuple[str, str]]:
    """The durable suppression list (ClickHouse ``forgotten_ids``): (tenant, hash) of every erased person key."""
    from sinks.clickhouse_client import connect
    from sinks.clickhouse_forget import load_forgotten

    client = connect(dsn)
    try:
        return load_forgotten(client)
    finally:
        client.close()


def dump_suppression_list(dsn: str, path: str) -> None:
    """Write ``read_suppression_list(dsn)`` to ``path`` as JSON (run in its own process: chDB lets one process
    hold a data path, and that must be the cluster's sink process)."""
    Path(path).write_text(json.dumps(read_suppression_list(dsn)))


def _with_suppression_file(settings: RunSettings) -> RunSettings:
    """Read the suppression list once, in a short-lived process, for every process of a cluster."""
    folder = Path(settings.recovery_dir) if settings.recovery_dir else Path(tempfile.mkdtemp(prefix="creditflow-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "creditflow-suppression.json"
    code = "import sys; from flows.run import dump_suppression_list as d; d(sys.argv[1], sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, settings.clickhouse_dsn, str(path)], check=True)
    return dataclasses.replace(settings, suppression_file=str(path))


def _build_flow(settings: RunSettings, flow_settings: FlowSettings, process_id: int | None = None) -> Dataflow:
    """The flow of one process (``process_id`` in a cluster, which then reads its share of the Redis streams)."""
    spec = parse_source_spec(settings.source)
    # A replay after a restart re-sends what was written after the resumed snapshot; the margin
    # covers the next epoch's writes that precede a snapshot, with room for clock skew.
    margin_s = max(60.0, 4.0 * settings.snapshot_interval_s)
    # Write-behind: inserts every 100 ms at most, off the worker thread (chDB releases the GIL). Measured at
    # 10k events/s: credit p50/p99 0.13/0.62 s, against 0.20/0.80 s with 200 ms, for ~6% more flow CPU.
    sink = ClickHouseSink(
        ClickHouseSettings(
            dsn=settings.clickhouse_dsn,
            replay_margin_s=margin_s,
            write_behind_s=0.1,
            retention=flow_settings.configs,
        )
    )
    recovery_dir = Path(settings.recovery_dir) if settings.recovery_dir else None
    archive = None
    if settings.archive_uri:
        lineage = store_lineage(recovery_dir) if recovery_dir is not None else ""
        archive = ParquetArchiveSink(
            ArchiveSettings(
                settings.archive_uri,
                flush_age_s=settings.archive_flush_s,
                lineage=lineage,
                retention=flow_settings.configs,
            )
        )
    process = None if process_id is None else (process_id, settings.processes)
    # The weights log is never trimmed by the flow: the publisher caps it (weights_store.LOG_MAXLEN).
    # It ends when the main source does, so a finite run still finishes.
    weights_log = None
    if settings.weights_url:
        weights_log = RedisStreamSource(settings.weights_url, [LOG_STREAM], stop_at_end=spec.ends)
    return build_flow(
        spec.build(recovery_dir, process),
        sink,
        flow_settings,
        adapt=spec.adapter(),
        archive=archive,
        weights_log=weights_log,
    )


LINEAGE_FILE = "creditflow-lineage"


def store_lineage(recovery_dir: Path) -> str:
    """The recovery store's identity, made once (a random id in ``<dir>/creditflow-lineage``).

    The archive sink uses it to tell a new store from the same store restarting
    before its first snapshot (``sinks.parquet_archive``). Safe when several
    processes start at once: the first to create the file wins.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> store_lineage(d) == store_lineage(d) != store_lineage(Path(tempfile.mkdtemp()))
    True
    """
    recovery_dir.mkdir(parents=True, exist_ok=True)
    path = recovery_dir / LINEAGE_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        for _ in range(50):  # another process may be between creating and writing it
            text = path.read_text().strip()
            if text:
                return text
            time.sleep(0.01)
        raise CreditflowError(f"{path} is empty; delete it only together with the recovery store") from None
    with os.fdopen(fd, "w") as f:
        f.write(uuid.uuid4().hex + "\n")
    return path.read_text().strip()


def _start_fresh(settings: RunSettings) -> RunSettings:
    """``--fresh-state``: move the old store aside (never delete it); the run then creates a new one."""
    if settings.recovery_dir is not None and Path(settings.recovery_dir).exists():
        moved = move_store_aside(Path(settings.recovery_dir))
        log.warning(
            "--fresh-state: moved recovery store %s aside to %s; state starts empty", settings.recovery_dir, moved
        )
    return dataclasses.replace(settings, fresh_state=False)


def _recovery(settings: RunSettings, flow: Dataflow | None = None) -> RecoveryConfig | None:
    """The recovery config, creating the store when new; with ``flow``, check and record its layout."""
    if settings.recovery_dir is None:
        return None
    path = Path(settings.recovery_dir)
    if not path.exists() or not any(path.glob("part-*.sqlite3")):
        parts = max(settings.recovery_partitions, settings.processes)
        path.mkdir(parents=True, exist_ok=True)
        init_db_dir(path, parts)
        log.info("created recovery store %s with %d partitions", path, parts)
    else:
        log.info("resuming from recovery store %s", path)
        found = len(list(path.glob("part-*.sqlite3")))
        if found < settings.processes:
            raise CreditflowError(
                f"recovery store {path} has {found} partitions but {settings.processes} processes were asked for; "
                "run with at most that many processes, or start a new store"
            )
    if flow is not None:
        check_recovery_store(flow, path)  # a store of other steps or state layouts is refused, never silently reset
        spec = parse_source_spec(settings.source)
        source = spec.build() if spec.kind != "kafka" else None  # listing Kafka partitions needs the broker
        if isinstance(source, FixedPartitionedSource):
            check_source_partitions(path, f"{FLOW_ID}.source", source.list_parts())
        record_store_layout(flow, path)
    return RecoveryConfig(path, backup_interval=timedelta(seconds=settings.backup_interval_s))


def _stop_now(signum: int, _frame: object) -> None:
    """SIGTERM / SIGINT: leave at once, as a crash would. Bytewax 0.21 has no graceful stop (the
    signal was ignored until the sources ended), and recovery makes a stop at any moment safe:
    the next start resumes from the last snapshot and the sinks skip what they already hold."""
    log.warning(
        "stopping on %s: the next start resumes from the last snapshot; nothing is lost",
        signal.Signals(signum).name,
    )
    logging.shutdown()
    os._exit(128 + signum)


def run_worker(settings: RunSettings, process_id: int | None = None, addresses: list[str] | None = None) -> None:
    """Build the flow and run it in this process (one Bytewax worker); SIGTERM/SIGINT stop it at once."""
    flow_settings = settings.flow_settings()
    flow = _build_flow(settings, flow_settings, process_id)
    mode = native_status()
    log.info("runs %s: %s", "compiled" if mode.mode == "native" else "as plain Python", mode.reason)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _stop_now)
    tune_gc()
    cli_main(
        flow,
        workers_per_process=1,
        process_id=process_id,
        addresses=addresses,
        epoch_interval=timedelta(seconds=settings.snapshot_interval_s),
        # in a cluster, run() checked and recorded the store once, before starting the processes
        recovery_config=_recovery(settings, flow if process_id is None else None),
    )
    if flow_settings.progress is not None:
        flow_settings.progress.log_totals()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run(settings: RunSettings) -> None:
    """Run to completion (bounded sources) or until interrupted."""
    if settings.fresh_state:
        settings = _start_fresh(settings)
    if settings.processes == 1:
        run_worker(settings)
        return
    # create/check the store once, before the processes (the flow's structure only: no weights polling here)
    _recovery(settings, _build_flow(settings, settings.flow_settings(live=False)))
    settings = _with_suppression_file(settings)
    addresses = [f"127.0.0.1:{p}" for p in _free_ports(settings.processes)]
    payload = json.dumps(dataclasses.asdict(settings))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "flows.run", payload, str(i), ";".join(addresses)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for i in range(settings.processes)
    ]
    log.info("started %d processes on %s", len(procs), ", ".join(addresses))
    try:
        with stop_signals_raise():
            codes = _wait_all(procs)
    except StopRequested as stop:  # SIGTERM/SIGINT to the launcher: each process stops as if sent it
        log.warning("stopping the %d flow processes on %s", len(procs), signal.Signals(stop.signum).name)
        _stop_all(procs, stop.signum)
        raise SystemExit(stop.exit_code) from None
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    if failed:
        raise CreditflowError(f"flow process(es) failed with exit codes {failed}; see their log lines above")


def _stop_all(procs: list[subprocess.Popen[bytes]], signum: int, grace_s: float = 10.0) -> None:
    """Send ``signum`` to every running process (each stops at once, ``_stop_now``); kill any still there after
    ``grace_s``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _wait_all(procs: list[subprocess.Popen[bytes]], grace_s: float = 10.0) -> list[int]:
    """Wait for every process; once one fails, stop the others (a cluster cannot go on without it)."""
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            return [int(c) for c in codes if c is not None]
        if any(c not in (None, 0) for c in codes):
            log.error("a flow process failed (exit codes %s); stopping the others", codes)
            _stop_all(procs, signal.SIGTERM, grace_s)
            return [p.wait() for p in procs]
        time.sleep(0.2)


def _worker_main(argv: list[str]) -> None:
    payload, process_id, addresses = argv
    settings = RunSettings(**json.loads(payload))
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s p{process_id} %(name)s %(levelname)s %(message)s")
    run_worker(settings, int(process_id), addresses.split(";"))


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
