"""The ``creditflow`` command.

creditflow demo                      # generated traffic -> flow -> embedded ClickHouse -> summary
creditflow run --source file:events.jsonl --clickhouse chdb:///var/lib/creditflow/ch
creditflow generate --out events.jsonl --persons 1000
creditflow summary --clickhouse chdb:///var/lib/creditflow/ch
creditflow loadtest --rate 10000 --duration 60     # own redis-server + embedded ClickHouse; report.json + .png
creditflow forget --redis redis://localhost:6379/0 --streams events   # finish every erasure (flow stopped)
creditflow retention --tenants tenants.toml     # delete what is past each tenant's retention_days (flow stopped)
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from creditflow.errors import CreditflowError

if TYPE_CHECKING:
    from flows.run import RunSettings

DEFAULT_DATA_DIR = ".creditflow"

log = logging.getLogger("creditflow")


def _default_dsn(data_dir: str) -> str:
    return f"chdb://{Path(data_dir, 'clickhouse').resolve()}"


def default_weights_url(source: str) -> str | None:
    """The source's Redis (without its query) for a ``redis://`` source, else ``None``.

    >>> default_weights_url("redis://127.0.0.1:6379/0?streams=events")
    'redis://127.0.0.1:6379/0'
    >>> default_weights_url("file:events.jsonl") is None
    True
    """
    if source.startswith(("redis://", "rediss://")):
        return source.partition("?")[0]
    return None


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--clickhouse", metavar="DSN", help="chdb:///path (embedded, default under --data-dir) or http://host:8123"
    )
    p.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help="where embedded ClickHouse lives by default (%(default)s)"
    )
    p.add_argument("--tenants", metavar="FILE", help="tenant config file (.toml or .json)")
    p.add_argument(
        "--recovery-dir",
        metavar="DIR",
        help="Bytewax recovery store (default <data dir>/recovery); a run resumes from it when it exists",
    )
    p.add_argument(
        "--no-recovery",
        dest="recovery",
        action="store_false",
        help="run without snapshots: a crash then replays the source from its start",
    )
    p.add_argument(
        "--fresh-state",
        action="store_true",
        help="move an existing recovery store aside to DIR.old-<timestamp> (nothing is deleted) and start every "
        "stateful step empty; needed when the store was written for other steps or state layouts",
    )
    p.add_argument(
        "--recovery-partitions",
        type=int,
        default=4,
        help="partitions of a new recovery store: at least the most processes you will ever run (%(default)s)",
    )
    p.add_argument(
        "--backup-interval",
        type=int,
        default=30,
        help="seconds superseded snapshots are kept (%(default)s)",
    )
    p.add_argument("--processes", "-p", type=int, default=1, help="Bytewax processes (%(default)s)")
    p.add_argument("--snapshot-interval", type=int, default=5, help="seconds between snapshots (%(default)s)")
    p.add_argument("--window-seconds", type=float, default=5.0, help="KPI tumbling window length (%(default)s)")
    p.add_argument("--allowed-lateness-ms", type=int, default=2000, help="KPI watermark lateness (%(default)s)")
    p.add_argument(
        "--restate-horizon-ms",
        type=int,
        default=600_000,
        help="how long a closed KPI window still takes late events and is restated (%(default)s)",
    )
    p.add_argument(
        "--archive",
        metavar="URI",
        help="where closed journeys are archived as Parquet for retraining: a directory or a pyarrow filesystem "
        "URI such as s3://bucket/prefix (default <data dir>/archive; 'none' keeps no archive)",
    )
    p.add_argument(
        "--archive-flush-s",
        type=float,
        default=10.0,
        help="archived journeys are written as a file at least this often while events flow (%(default)s)",
    )
    p.add_argument(
        "--pii-key-file",
        metavar="PATH",
        help="secret key for hashing emails and phone numbers per tenant (default <data dir>/pii.key, created "
        "with mode 0600 on first use; keep it: a new key changes every hash). CREDITFLOW_PII_KEY (hex) overrides it",
    )
    p.add_argument(
        "--weights",
        metavar="REDIS_URL",
        help="Redis holding the published model weights the data-driven model follows live (default: the "
        "source's Redis for a redis:// source, else none; 'none' scores with untrained weights)",
    )
    p.add_argument(
        "--progress-every",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between progress log lines per process (%(default)s); 0 logs every batch",
    )


def run_settings_from_args(args: argparse.Namespace, source: str) -> RunSettings:
    """The ``RunSettings`` of parsed ``run`` (or ``demo``) options, defaults filled in from ``--data-dir``.

    >>> args = build_parser().parse_args(["run", "--source", "kafka://broker:9092/events", "--data-dir", "/d"])
    >>> settings = run_settings_from_args(args, args.source)
    >>> settings.recovery_dir, settings.archive_uri, settings.clickhouse_dsn
    ('/d/recovery', '/d/archive', 'chdb:///d/clickhouse')
    """
    from flows.run import RunSettings

    archive = args.archive or str(Path(args.data_dir, "archive").resolve())
    weights = args.weights or default_weights_url(source)
    return RunSettings(
        source=source,
        archive_uri=None if archive == "none" else archive,
        archive_flush_s=args.archive_flush_s,
        weights_url=None if weights in ("none", None) else weights,
        clickhouse_dsn=args.clickhouse or _default_dsn(args.data_dir),
        tenants_file=args.tenants,
        recovery_dir=(args.recovery_dir or str(Path(args.data_dir, "recovery"))) if args.recovery else None,
        recovery_partitions=args.recovery_partitions,
        backup_interval_s=args.backup_interval,
        fresh_state=args.fresh_state,
        processes=args.processes,
        snapshot_interval_s=args.snapshot_interval,
        window_ms=int(args.window_seconds * 1000),
        allowed_lateness_ms=args.allowed_lateness_ms,
        restate_horizon_ms=args.restate_horizon_ms,
        progress_every_s=args.progress_every,
        pii_key_file=args.pii_key_file or str(Path(args.data_dir, "pii.key").resolve()),
    )


def _print_summary(dsn: str, picture: Path | None = None) -> None:
    from creditflow.summary import render_summary
    from sinks.clickhouse_client import connect

    client = connect(dsn)
    try:
        print(render_summary(client))
        if picture is not None:
            from creditflow.plots import plot_credit_by_channel

            print(f"\nchart: {plot_credit_by_channel(client, picture)}")
    finally:
        client.close()


def cmd_run(args: argparse.Namespace) -> int:
    from flows.run import run

    settings = run_settings_from_args(args, args.source)
    started = time.monotonic()
    run(settings)
    log.info("flow finished in %.1f s", time.monotonic() - started)
    if args.summary:
        _print_summary(settings.clickhouse_dsn)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.run import run

    if not args.keep:  # the demo starts from empty ClickHouse tables and empty flow state each time
        for folder in (Path(args.data_dir, "clickhouse"), Path(args.recovery_dir or Path(args.data_dir, "recovery"))):
            if folder.exists():
                shutil.rmtree(folder)
    source = f"generator:seed={args.seed},persons={args.persons},partitions={args.processes},bad_fraction=0.002"
    settings = run_settings_from_args(args, source)
    print(f"creditflow demo: {args.persons} persons of generated traffic -> {settings.clickhouse_dsn}", flush=True)
    started = time.monotonic()
    run(settings)
    print(f"flow finished in {time.monotonic() - started:.1f} s\n", flush=True)
    _print_summary(settings.clickhouse_dsn, Path(args.data_dir, "demo-credit-by-channel.png"))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from sources.generator import generate_events, write_jsonl

    n = write_jsonl(args.out, generate_events(seed=args.seed, n_persons=args.persons))
    print(f"wrote {n} events to {args.out}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    _print_summary(args.clickhouse or _default_dsn(args.data_dir))
    return 0


def cmd_loadtest(args: argparse.Namespace) -> int:
    from loadtest.redis_load import run_from_args

    return run_from_args(args, sys.argv)


def cmd_retrain(args: argparse.Namespace) -> int:
    from jobs.retrain import run, settings_from_args

    return run(settings_from_args(args))


def cmd_native(args: argparse.Namespace) -> int:
    from creditflow.native import main as native_main

    return native_main([args.action, *(["--force"] if args.force else [])])


def cmd_weights(args: argparse.Namespace) -> int:
    import redis

    from creditflow.weights_store import current_version, rollback, versions

    client = redis.Redis.from_url(args.redis)
    try:
        if args.action == "rollback":
            if args.to is None:
                raise CreditflowError("weights rollback needs --to VERSION (see `creditflow weights list`)")
            back = rollback(client, args.tenant, args.to)
            print(f"tenant {args.tenant!r} scores with weights v{back.version} ({back.method}) again")
            return 0
        current = current_version(client, args.tenant)
        for w in versions(client, args.tenant):
            mark = "*" if w.version == current else " "
            top = ", ".join(f"{c} {v:.3g}" for c, v in sorted(w.channel_weights.items(), key=lambda cv: -cv[1])[:4])
            loss = w.metrics.get("log_loss")
            print(f"{mark} v{w.version:<4} {w.method:<15} journeys {w.journeys:<9} log_loss {loss} | {top}")
        if current == 0:
            print(f"tenant {args.tenant!r} has no current weights (data_driven credits linearly, version 0)")
        return 0
    finally:
        client.close()


def cmd_forget(args: argparse.Namespace) -> int:
    from creditflow.pii import pii_hasher_from
    from flows.forget_sweep import SweepSettings, sweep

    archive = args.archive or str(Path(args.data_dir, "archive").resolve())
    recovery = args.recovery_dir or str(Path(args.data_dir, "recovery"))
    if args.streams and not args.redis:
        raise CreditflowError("--streams needs --redis URL (the Redis the streams are on)")
    key_file = Path(args.pii_key_file or Path(args.data_dir, "pii.key"))
    if not key_file.exists() and not os.environ.get("CREDITFLOW_PII_KEY"):
        raise CreditflowError(
            f"no PII key at {key_file}: the sweep must hash ids with the run's key; pass --pii-key-file "
            "or set CREDITFLOW_PII_KEY as for `creditflow run`"
        )
    settings = SweepSettings(
        clickhouse_dsn=args.clickhouse or _default_dsn(args.data_dir),
        pii=pii_hasher_from(key_file),
        archive_uri=None if archive == "none" else archive,
        recovery_dir=None if recovery == "none" else recovery,
        redis_url=args.redis,
        streams=[s for s in (args.streams or "").split(",") if s],
    )
    for line in sweep(settings).lines():
        print(line)
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from creditflow.config import TenantConfigs
    from flows.retention_sweep import expire_stores

    archive = args.archive or str(Path(args.data_dir, "archive").resolve())
    report = expire_stores(
        TenantConfigs.load(args.tenants),
        args.clickhouse or _default_dsn(args.data_dir),
        archive_uri=None if archive == "none" else archive,
    )
    for line in report.lines():
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="creditflow", description="Real-time marketing attribution.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run_p = sub.add_parser("run", help="run the attribution flow on a source")
    run_p.add_argument(
        "--source",
        required=True,
        help="file:PATH[,PATH][?splits=N] | redis://HOST:PORT/DB?streams=a,b | kafka://BROKERS/TOPICS | "
        "generator:seed=N,persons=N",
    )
    run_p.add_argument("--no-summary", dest="summary", action="store_false", help="skip the summary at the end")
    _add_run_options(run_p)
    run_p.set_defaults(func=cmd_run)

    demo_p = sub.add_parser("demo", help="generated multi-tenant traffic through the flow into embedded ClickHouse")
    demo_p.add_argument("--persons", type=int, default=5000)
    demo_p.add_argument("--seed", type=int, default=1)
    demo_p.add_argument("--keep", action="store_true", help="keep the previous demo's ClickHouse data")
    _add_run_options(demo_p)
    demo_p.set_defaults(func=cmd_demo)

    gen_p = sub.add_parser("generate", help="write seeded synthetic events as JSONL")
    gen_p.add_argument("--out", required=True)
    gen_p.add_argument("--persons", type=int, default=1000)
    gen_p.add_argument("--seed", type=int, default=1)
    gen_p.set_defaults(func=cmd_generate)

    sum_p = sub.add_parser("summary", help="print the per-channel, per-model summary from ClickHouse")
    sum_p.add_argument("--clickhouse", metavar="DSN")
    sum_p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    sum_p.set_defaults(func=cmd_summary)

    from loadtest.redis_load import add_arguments as add_loadtest_arguments

    load_p = sub.add_parser(
        "loadtest",
        help="live traffic through Redis Streams into the flow, measured: report.json and report.png",
        description="Starts its own redis-server, runs the flow as real processes into a fresh embedded "
        "ClickHouse and measures throughput, conversion -> credit and window close -> KPI latency, lag, RSS and "
        "state per person (see loadtest/redis_load.py).",
    )
    add_loadtest_arguments(load_p)
    load_p.set_defaults(func=cmd_loadtest)

    from jobs.retrain import add_arguments as add_retrain_arguments

    retrain_p = sub.add_parser(
        "retrain",
        help="Ray job: train the data-driven weights per tenant on the journey archive and publish them",
        description="Reads the Parquet archive of closed journeys with ray.data, trains Markov, Shapley and an "
        "incrementality model per tenant, evaluates them on held-out journeys and publishes the chosen "
        "weights as a new version that running flows pick up within a second (see jobs/retrain.py).",
    )
    add_retrain_arguments(retrain_p)
    retrain_p.set_defaults(func=cmd_retrain)

    weights_p = sub.add_parser("weights", help="list a tenant's weight versions, or roll back to one")
    weights_p.add_argument("action", choices=["list", "rollback"])
    weights_p.add_argument("--tenant", required=True)
    weights_p.add_argument("--to", type=int, metavar="VERSION", help="rollback: the version to score with again")
    weights_p.add_argument("--redis", required=True, help="the Redis the weights are published to")
    weights_p.set_defaults(func=cmd_weights)

    native_p = sub.add_parser(
        "native",
        help="status: whether the compiled hot modules run here, and why; build: compile them (mypyc, dev extra)",
    )
    native_p.add_argument("action", choices=["status", "build"])
    native_p.add_argument("--force", action="store_true", help="build even if the build matches the sources")
    native_p.set_defaults(func=cmd_native)

    forget_p = sub.add_parser(
        "forget",
        help="finish every erasure (deletion_request): remove listed persons from Redis streams, ClickHouse, "
        "the archive and the recovery store (stop the flow first when it uses embedded ClickHouse)",
    )
    forget_p.add_argument("--clickhouse", metavar="DSN", help="default: embedded under --data-dir")
    forget_p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    forget_p.add_argument("--archive", metavar="URI", help="default <data dir>/archive; 'none' skips it")
    forget_p.add_argument("--recovery-dir", metavar="DIR", help="default <data dir>/recovery; 'none' skips it")
    forget_p.add_argument("--redis", metavar="URL", help="the Redis of the input streams")
    forget_p.add_argument("--streams", metavar="A,B", help="input streams to sweep (with --redis)")
    forget_p.add_argument("--pii-key-file", metavar="PATH", help="the run's key (default <data dir>/pii.key)")
    forget_p.set_defaults(func=cmd_forget)

    retention_p = sub.add_parser(
        "retention",
        help="delete ClickHouse rows and archive dates past each tenant's retention_days (flow stopped)",
        description="A running flow expires by itself hourly; run this with the flow stopped, e.g. right after "
        "lowering a tenant's retention_days.",
    )
    retention_p.add_argument("--tenants", required=True, metavar="FILE", help="tenant config file (.toml or .json)")
    retention_p.add_argument("--clickhouse", metavar="DSN", help="default: embedded under --data-dir")
    retention_p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    retention_p.add_argument("--archive", metavar="URI", help="default <data dir>/archive; 'none' skips it")
    retention_p.set_defaults(func=cmd_retention)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.func(args))
    except CreditflowError as exc:
        print(f"creditflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
