"""``creditflow retrain``: Ray reads the journey archive, trains per tenant, publishes the chosen weights.

One entry point for both places it runs::

    creditflow retrain --archive .creditflow/archive --redis redis://127.0.0.1:6379/0
    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m jobs.retrain --archive s3://bucket/archive --redis redis://redis:6379/0

Without ``--ray-address`` (and no ``RAY_ADDRESS`` in the environment, which
``ray job submit`` sets) it starts a local Ray and stops it at the end. Ray 2.60
turns token authentication on for a local cluster: the driver that starts it
holds the token, so nothing is needed here; submitting to a cluster needs
``RAY_AUTH_MODE=token`` and the cluster's token on the client (README).

Per tenant (a Ray task each, in parallel), on its archived closed journeys:

1. ``ray.data.read_parquet`` of the tenant's files (``sinks.parquet_archive``
   layout, files of every version: ``ANY_VERSION_SCHEMA``), sorted by
   ``journey_id`` so the result does not depend on read order, keeping each
   journey's highest ``revision`` (a restated conversion's latest path);
2. each journey becomes ``(touches as (channel, age in days before it closed),
   converted)``; ``jobs.train.train_tenant`` holds out a seeded share, fits
   Markov, Shapley and the incrementality model, and chooses by held-out log loss;
3. the chosen method's weights are published (``creditflow.weights_store.publish``):
   a new version, current at once; running flows score with it within a second.

Same archive, same seed: same weights (a test checks it). Tenants with fewer
than ``--min-journeys`` journeys or no conversion are skipped, with the reason.
Progress lines go to stderr; ``--out FILE`` writes the JSON report.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from creditflow.errors import CreditflowError
from creditflow.model_weights import ModelWeights
from jobs.train import METHODS, TenantTraining, train_tenant

__all__ = ["RetrainSettings", "journeys_of", "main", "read_journeys", "retrain", "weights_of"]

DAY_MS = 86_400_000


@dataclass(frozen=True)
class RetrainSettings:
    archive: str
    """The archive's directory or pyarrow filesystem URI (``creditflow run --archive``)."""
    redis_url: str | None = None
    """Where to publish; None (``--dry-run``) trains and reports without publishing."""
    tenants: tuple[str, ...] = ()
    """Only these tenants (default: every tenant in the archive)."""
    start_date: str | None = None
    end_date: str | None = None
    """Training window: closing dates (UTC, inclusive) of the journeys used."""
    seed: int = 0
    holdout_fraction: float = 0.2
    min_journeys: int = 100
    ray_address: str | None = None
    out: Path | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout_fraction < 1.0:
            raise CreditflowError(f"--holdout must be between 0 and 1 (got {self.holdout_fraction})")
        if self.min_journeys < 1:
            raise CreditflowError(f"--min-journeys must be >= 1 (got {self.min_journeys})")


@dataclass
class TenantReport:
    tenant_id: str
    journeys: int
    status: str
    """``published``, ``trained`` (dry run) or ``skipped: <why>``."""
    chosen: str | None = None
    version: int | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def say(msg: str, t0: float) -> None:
    print(f"[retrain {time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- pure parts


def journeys_of(table: pa.Table) -> list[tuple[list[tuple[str, float]], bool]]:
    """Archive rows -> ``(touches as (channel, age in days before the path's last touch), converted)``.

    In ``journey_id`` order, so the result does not depend on the order files were read in.
    Ages count back from the journey's *last touch*, not from its closing time: a
    non-converting journey has no conversion time (it closes at its last event),
    so measuring from the close would tell the models which journeys converted.
    The online scorer measures from the conversion instead; that adds the same
    time to every touch of a path, which a recency factor ``0.5 ** (age / h)``
    turns into one common factor: the normalised credits are the same.

    Journeys without a touch are left out: the archive holds converting ones (a
    conversion with no eligible touch) but can never hold non-converting ones (a
    person never touched has no journey), so they would only teach the models
    that an untouched person always converts. A ``journey_id`` archived more than
    once counts once, as its highest ``revision`` (a restated conversion: a touch
    arrived late, or a device's journey was merged; a missing or null revision,
    files written before revisions existed, is 0); copies of one revision (a
    crash before the flow's first snapshot, a restart without recovery) count
    once too. So does a path archived both ``unconverted`` (training close) and
    ``expired`` (idle TTL).

    >>> import datetime as dt
    >>> ts = lambda d: dt.datetime(1970, 1, 1 + d, tzinfo=dt.UTC)
    >>> t = pa.table({"journey_id": ["b", "a", "c", "c"], "outcome": ["expired", "converted", "converted", "converted"],
    ...               "touches": [[{"channel": "email", "ts": ts(0)}, {"channel": "search", "ts": ts(2)}], [],
    ...                           [{"channel": "search", "ts": ts(0)}, {"channel": "social", "ts": ts(1)}],
    ...                           [{"channel": "social", "ts": ts(1)}]],
    ...               "revision": [0, 0, 1, 0]})
    >>> journeys_of(t)
    [([('email', 2.0), ('search', 0.0)], False), ([('search', 1.0), ('social', 0.0)], True)]
    """
    if table.num_rows == 0:
        return []
    table = _latest_revisions(table)
    if "person_id" in table.column_names:
        table = _one_unconverted_close(table)
    converted = pc.equal(table.column("outcome"), "converted").to_numpy(zero_copy_only=False)
    touches = table.column("touches").combine_chunks()
    offsets = touches.offsets.to_numpy()
    flat = touches.flatten()
    channels = flat.field("channel").to_pylist()
    ts = flat.field("ts").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    lengths = np.diff(offsets)
    touched = lengths > 0
    last = np.zeros(len(lengths), dtype=np.int64)
    if len(ts):
        last[touched] = np.maximum.reduceat(ts, offsets[:-1][touched])
    ages = ((np.repeat(last, lengths) - ts) / DAY_MS).tolist()
    out = []
    for i in np.flatnonzero(touched).tolist():
        lo, hi = offsets[i], offsets[i + 1]
        out.append((list(zip(channels[lo:hi], ages[lo:hi], strict=True)), bool(converted[i])))
    return out


def _latest_revisions(table: pa.Table) -> pa.Table:
    """One row per ``journey_id``, its highest revision, in ``journey_id`` order, whatever the read order.

    Copies of a revision should be equal; if they are not, the smallest by ``closed_at``, ``outcome``
    and ``person_id`` (those present) is kept, so the choice does not depend on the read order either.
    """
    from sinks.archive_reader import latest_revisions  # here, as the other sink imports: no Bytewax at import

    if "revision" in table.column_names:
        revision = pc.fill_null(table.column("revision"), 0).cast(pa.int64())
        table = table.set_column(table.column_names.index("revision"), "revision", revision)
    else:
        table = table.append_column("revision", pa.repeat(pa.scalar(0, pa.int64()), table.num_rows))
    ties = [(c, "ascending") for c in ("closed_at", "outcome", "person_id") if c in table.column_names]
    # in journey_id order, ties first: latest_revisions keeps the first copy and the table's order
    return latest_revisions(table.sort_by([("journey_id", "ascending"), *ties]), keys=("journey_id",))


def _one_unconverted_close(table: pa.Table) -> pa.Table:
    """One row per (person, closing time) among non-converting rows, in ``journey_id`` order.

    An idle path is archived ``unconverted`` at the training close and the same path ``expired``
    at the idle TTL; it is one negative example.
    """
    outcome = table.column("outcome").to_numpy(zero_copy_only=False)
    person = table.column("person_id").to_numpy(zero_copy_only=False)
    closed = table.column("closed_at").cast(pa.int64()).to_numpy(zero_copy_only=False)
    seen: set[tuple[str, int]] = set()
    keep = np.ones(len(outcome), dtype=bool)
    for i in np.flatnonzero(outcome != "converted").tolist():
        key = (person[i], int(closed[i]))
        if key in seen:
            keep[i] = False
        seen.add(key)
    return table if keep.all() else table.filter(pa.array(keep))


def weights_of(tenant_id: str, training: TenantTraining, table: pa.Table, trained_at_ms: int) -> ModelWeights:
    """The chosen method's result as a ``ModelWeights`` to publish (version assigned on publish)."""
    chosen = training.methods[training.chosen]
    metrics = {k: v for k, v in chosen.metrics.items() if math.isfinite(v)}
    for method, result in training.methods.items():
        for k, v in result.metrics.items():
            if math.isfinite(v):
                metrics[f"{method}.{k}"] = v
    closed = table.column("closed_at").cast(pa.int64())
    return ModelWeights(
        tenant_id=tenant_id,
        version=0,
        method=chosen.method,
        channel_weights=dict(chosen.channel_weights),
        half_life_days=chosen.half_life_days,
        split=chosen.split,
        trained_at_ms=trained_at_ms,
        window_start_ms=int(pc.min(closed).as_py() or 0),
        window_end_ms=int(pc.max(closed).as_py() or 0),
        journeys=training.train_journeys + training.holdout_journeys,
        metrics=metrics,
        shares=dict(chosen.shares),
    )


def _train_one(tenant_id: str, settings: RetrainSettings, *tables: pa.Table) -> tuple[TenantReport, Any]:
    t0 = time.monotonic()
    table = pa.concat_tables(tables) if tables else pa.table({})
    n = table.num_rows
    if n < settings.min_journeys:
        return TenantReport(
            tenant_id, n, f"skipped: {n} journeys, fewer than --min-journeys {settings.min_journeys}"
        ), None
    journeys = journeys_of(table)
    converting = sum(1 for _, c in journeys if c)
    if not converting:
        return TenantReport(tenant_id, n, "skipped: no converting journey in the window"), None
    if converting == len(journeys):
        why = (
            "skipped: no non-converting journey in the window, so no model can tell what a channel adds "
            "(a journey closes unconverted after the tenant's idle TTL, idle_ttl_days, 30 by default)"
        )
        return TenantReport(tenant_id, n, why), None
    training = train_tenant(journeys, seed=settings.seed, holdout_fraction=settings.holdout_fraction)
    weights = weights_of(tenant_id, training, table, int(time.time() * 1000))
    report = TenantReport(
        tenant_id,
        n,
        "trained",
        chosen=training.chosen,
        metrics={m: dict(r.metrics) for m, r in training.methods.items()},
        weights=dict(weights.channel_weights),
        seconds=round(time.monotonic() - t0, 3),
    )
    return report, weights


# ----------------------------------------------------------------------------- Ray


def _ray_init(address: str | None) -> bool:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local Ray; True if we started it."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return False
    ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    return True


def read_journeys(paths: list[str], filesystem: Any) -> Any:
    """A Ray dataset of the archive files ``paths`` (``archive_files``) with the columns training reads.

    Files of every version: those written before revisions existed have no ``revision``, read as
    null (0 for ``journeys_of``, which keeps each journey's highest revision).
    """
    import ray

    from sinks.parquet_archive import ANY_VERSION_SCHEMA

    return ray.data.read_parquet(paths, filesystem=filesystem, schema=ANY_VERSION_SCHEMA).select_columns(
        ["journey_id", "person_id", "outcome", "closed_at", "touches", "revision"]
    )


def retrain(settings: RetrainSettings) -> list[TenantReport]:
    """Train every tenant of the archive in Ray, publish (unless a dry run), return the reports."""
    import ray

    from sinks.archive_reader import archive_files

    t0 = time.monotonic()
    location, files = archive_files(settings.archive, None, settings.start_date, settings.end_date)
    tenants = sorted(t for t in files if not settings.tenants or t in settings.tenants)
    missing = sorted(set(settings.tenants) - set(files))
    say(f"archive {settings.archive}: {sum(len(f) for f in files.values())} files, tenants {tenants}", t0)
    reports = [TenantReport(t, 0, "skipped: no archived journeys in the window") for t in missing]
    if not tenants:
        return reports
    started = _ray_init(settings.ray_address)
    say("Ray " + ("started locally (token authentication on)" if started else "connected"), t0)
    try:
        train_remote = ray.remote(_train_one)
        pending = {}
        for tenant in tenants:
            ds = read_journeys(files[tenant], location.filesystem)
            pending[train_remote.remote(tenant, settings, *ds.to_arrow_refs())] = tenant
        say(f"training {len(pending)} tenant(s) in Ray tasks", t0)
        results: list[tuple[TenantReport, Any]] = []
        remaining = list(pending)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            report, weights = ray.get(done[0])
            results.append((report, weights))
            say(f"tenant {report.tenant_id}: {report.status} ({report.journeys} journeys, {report.seconds} s)", t0)
    finally:
        if started:
            ray.shutdown()
    say("Ray stopped" if started else "Ray disconnected", t0)
    if settings.redis_url is not None:
        import redis

        from creditflow.weights_store import publish

        client = redis.Redis.from_url(settings.redis_url)
        try:
            for report, weights in results:
                if weights is not None:
                    published = publish(client, weights)
                    report.status, report.version = "published", published.version
                    say(f"tenant {report.tenant_id}: published {report.chosen} weights v{published.version}", t0)
        finally:
            client.close()
    reports += [r for r, _ in sorted(results, key=lambda rw: rw[0].tenant_id)]
    say(f"done in {time.monotonic() - t0:.1f} s", t0)
    return reports


# ----------------------------------------------------------------------------- CLI


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--archive", required=True, help="archive directory or pyarrow filesystem URI (s3://...)")
    ap.add_argument("--redis", help="publish the chosen weights to this Redis (redis://host:port/db)")
    ap.add_argument("--dry-run", action="store_true", help="train and report, publish nothing")
    ap.add_argument("--tenants", default="", help="comma-separated tenants (default: all in the archive)")
    ap.add_argument("--since", help="first closing date trained on, YYYY-MM-DD (UTC)")
    ap.add_argument("--until", help="last closing date trained on, YYYY-MM-DD (UTC)")
    ap.add_argument("--seed", type=int, default=0, help="held-out split and sampled Shapley (%(default)s)")
    ap.add_argument("--holdout", type=float, default=0.2, help="share of journeys held out (%(default)s)")
    ap.add_argument("--min-journeys", type=int, default=100, help="skip tenants with fewer (%(default)s)")
    ap.add_argument("--ray-address", help="Ray cluster to use (default: RAY_ADDRESS, else a local Ray)")
    ap.add_argument("--out", type=Path, help="write the JSON report here")


def settings_from_args(args: argparse.Namespace) -> RetrainSettings:
    if not args.dry_run and not args.redis:
        raise CreditflowError("retrain needs --redis URL to publish the weights to, or --dry-run")
    return RetrainSettings(
        archive=args.archive,
        redis_url=None if args.dry_run else args.redis,
        tenants=tuple(t for t in args.tenants.split(",") if t),
        start_date=args.since,
        end_date=args.until,
        seed=args.seed,
        holdout_fraction=args.holdout,
        min_journeys=args.min_journeys,
        ray_address=args.ray_address,
        out=args.out,
    )


def run(settings: RetrainSettings) -> int:
    reports = retrain(settings)
    text = json.dumps({"methods": list(METHODS), "tenants": [r.__dict__ for r in reports]}, indent=2, default=str)
    if settings.out is not None:
        settings.out.write_text(text)
    print(text)
    return 0 if any(r.status in ("published", "trained") for r in reports) else 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.retrain", description=__doc__.split("\n")[0])
    add_arguments(ap)
    try:
        return run(settings_from_args(ap.parse_args(argv)))
    except CreditflowError as e:
        print(f"retrain: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
