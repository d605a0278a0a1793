"""Where the flow's time goes: decode, identity, journeys, models, dedup, windows, sink, Bytewax.

Runs the whole attribution flow in this process (one worker, snapshots every 5 s
into a fresh recovery store, a fresh embedded ClickHouse) under cProfile, on
generated traffic, and prints each component's share of the CPU time with the
throughput of the profiled run (cProfile slows the run ~2x; the shares are what
matter). The sink writes synchronously here so its time is counted in this
thread (the flow's write-behind thread would hide it).

    python -m loadtest.profile_flow --persons 20000 [--json out.json]

Self time is summed per source file and mapped to a component; time in C
built-ins (dict methods, orjson, chDB, pickle) goes to the component of the
Python function that called them. cProfile cannot see inside the modules
``creditflow.native`` compiles, so the profile runs them as plain Python
(``CREDITFLOW_PURE=1``; the command sets it): the shares are those of the Python code.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("decode", ("schemas/", "operators/decode.py", "creditflow/channels.py", "orjson")),
    (
        "identity",
        ("operators/identity.py", "state/device_graph.py", "state/user_devices.py", "state/probable_links.py"),
    ),
    ("consent + pii", ("creditflow/consent.py", "creditflow/pii.py", "creditflow/forgotten.py")),
    ("models", ("creditflow/attribution.py", "creditflow/weights.py")),
    ("journeys", ("state/journeys.py", "operators/journeys.py")),
    ("dedup", ("state/conversion_dedup.py", "state/event_dedup.py", "operators/dedup.py")),
    ("windows", ("state/kpi_windows.py", "operators/kpi.py", "creditflow/kpis.py")),
    ("sink", ("sinks/", "clickhouse_connect", "chdb")),
    ("source", ("sources/",)),
    ("sharded state + shard files", ("operators/sharded.py", "state/shard_store.py", "sqlite3")),
    ("bytewax + snapshots", ("bytewax", "pickle", "copyreg", "operators/state_guard.py")),
]
"""Component -> path fragments of the files whose self time it owns (first match wins)."""


def component_of(filename: str) -> str | None:
    """The component a source file belongs to, or None (e.g. a C built-in: ``~``).

    >>> component_of("/repo/schemas/decode.py"), component_of("/x/site-packages/bytewax/operators/__init__.py")
    ('decode', 'bytewax + snapshots')
    >>> component_of("~") is None
    True
    """
    for name, fragments in COMPONENTS:
        if any(f in filename for f in fragments):
            return name
    return None


def shares(stats: pstats.Stats) -> Counter[str]:
    """Seconds of self time per component; built-ins are charged to their callers' components."""
    out: Counter[str] = Counter()
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, func), (_cc, _nc, tottime, _ct, callers) in raw.items():
        owner = component_of(filename) or component_of(func)
        if owner is not None:
            out[owner] += tottime
            continue
        # A built-in: split its time over its callers by the time each call path took.
        total = sum(c[2] for c in callers.values()) or 1.0
        for (cfile, _cl, cfunc), caller_stats in callers.items():
            part = tottime * caller_stats[2] / total
            out[component_of(cfile) or component_of(cfunc) or "other"] += part
    return out


def profile(persons: int, seed: int = 1, pstats_out: Path | None = None) -> dict[str, Any]:
    """Profile one in-process run over ``persons`` persons of generated traffic.

    ``pstats_out``: also dump the raw profile there (read it with ``python -m pstats``).
    """
    from bytewax.testing import run_main

    from creditflow.native import PURE_ENV, status

    if status().mode == "native":
        msg = f"cProfile cannot see compiled code: profile in a process started with {PURE_ENV}=1"
        raise RuntimeError(msg)

    from flows.attribution import build_flow
    from flows.run import RunSettings
    from flows.source_spec import parse_source_spec
    from loadtest.file_throughput import _write_partitioned
    from sinks.clickhouse import ClickHouseSink
    from sinks.clickhouse_client import ClickHouseSettings

    paths, n_events = _write_partitioned(seed, persons, 2)
    with tempfile.TemporaryDirectory() as tmp:
        recovery = Path(tmp, "recovery")
        settings = RunSettings(
            source="file:" + ",".join(map(str, paths)), clickhouse_dsn=f"chdb://{tmp}/ch", recovery_dir=str(recovery)
        )
        spec = parse_source_spec(settings.source)
        from bytewax.recovery import RecoveryConfig, init_db_dir

        recovery.mkdir()
        init_db_dir(recovery, 1)
        sink = ClickHouseSink(ClickHouseSettings(dsn=settings.clickhouse_dsn))
        flow = build_flow(spec.build(recovery), sink, settings.flow_settings(), adapt=spec.adapter())
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        run_main(flow, epoch_interval=timedelta(seconds=5), recovery_config=RecoveryConfig(str(recovery)))
        profiler.disable()
        wall = time.perf_counter() - started
    if pstats_out is not None:
        profiler.dump_stats(pstats_out)
    seconds = shares(pstats.Stats(profiler))
    total = sum(seconds.values())
    return {
        "events": n_events,
        "profiled_wall_s": round(wall, 2),
        "profiled_events_per_s": round(n_events / wall),
        "shares": {k: round(v / total, 3) for k, v in seconds.most_common()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=20_000)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--pstats", type=Path, help="also dump the raw profile here (python -m pstats FILE)")
    args = ap.parse_args()
    from creditflow.native import PURE_ENV, status

    if status().mode == "native":  # cProfile sees no compiled frame: profile the same code as plain Python
        env = {**os.environ, PURE_ENV: "1"}
        os.execve(sys.executable, [sys.executable, "-m", "loadtest.profile_flow", *sys.argv[1:]], env)
    print(f"profiling the flow over {args.persons} persons of traffic...", file=sys.stderr, flush=True)
    result = profile(args.persons, pstats_out=args.pstats)
    print(f"{result['events']} events, {result['profiled_events_per_s']}/s under cProfile")
    for name, share in result["shares"].items():
        print(f"  {name:20} {share:6.1%}  {'#' * round(share * 60)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
