"""Benchmark: events/s of the whole flow on a file source, one vs several processes.

Runs ``creditflow run --source file:...`` as real processes into a fresh embedded
ClickHouse, several times per process count, and prints the medians of
throughput, wall time and peak RSS, plus the ratio between process counts (the
machine is shared and noisy: compare within one run).

    python -m loadtest.file_throughput --persons 20000 --repeats 3 --processes 1,2

Throughput counts every event read (valid or dead-lettered) over the wall time
of the run minus the start-up time, measured as a run of one event per file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import orjson

from sources.generator import generate_events

OUT = Path(__file__).parent / "out"


def _write_partitioned(seed: int, persons: int, parts: int) -> tuple[list[Path], int]:
    """Generated events split into files by person (as a person-keyed topic would be)."""
    OUT.mkdir(exist_ok=True)
    paths = [OUT / f"events-s{seed}-p{persons}-{i}of{parts}.jsonl" for i in range(parts)]
    meta = OUT / f"events-s{seed}-p{persons}-{parts}.count"
    if meta.exists() and all(p.exists() for p in paths):
        return paths, int(meta.read_text())
    files = [p.open("wb") for p in paths]
    n = 0
    for ev in generate_events(seed=seed, n_persons=persons):
        who = ev.get("anonymous_id") or ev.get("campaign_id") or ""
        files[zlib.crc32(str(who).encode()) % parts].write(orjson.dumps(ev) + b"\n")
        n += 1
        if n % 100_000 == 0:
            print(f"  generated {n} events", file=sys.stderr, flush=True)
    for f in files:
        f.close()
    meta.write_text(str(n))
    return paths, n


def _rss_tree_kb(pid: int) -> int:
    """Resident memory of a process and its children, in KiB (Linux /proc)."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            stack += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def _run_once(paths: list[Path], processes: int) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB, all processes together) of one run."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "creditflow.cli",
            "run",
            "--source",
            "file:" + ",".join(str(p) for p in paths),
            "--processes",
            str(processes),
            "--clickhouse",
            f"chdb://{tmp}/ch",
            "--data-dir",
            tmp,  # recovery on (as in production), in a fresh store per run
            "--no-summary",
        ]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _rss_tree_kb(proc.pid))
            time.sleep(0.1)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stderr.read() if proc.stderr else ''}")
        return wall, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--processes", default="1,2", help="comma-separated process counts to compare")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    counts = [int(c) for c in args.processes.split(",")]

    print(f"generating {args.persons} persons of traffic (seed {args.seed})...", file=sys.stderr, flush=True)
    results = {}
    for procs in counts:
        paths, n_events = _write_partitioned(args.seed, args.persons, max(counts))
        # Start-up = a run of one event per file: imports, cluster, chDB open and migrations, flush.
        tiny = [OUT / f"one-event-{i}.jsonl" for i in range(len(paths))]
        for i, t in enumerate(tiny):
            t.write_bytes(paths[i].read_bytes().split(b"\n", 1)[0] + b"\n")
        startup = statistics.median(_run_once(tiny, procs)[0] for _ in range(2))
        walls, peaks = [], []
        for i in range(args.repeats):
            wall, peak = _run_once(paths, procs)
            walls.append(wall)
            peaks.append(peak)
            rate = n_events / max(wall - startup, 1e-9)
            print(
                f"  {procs} process(es), run {i + 1}/{args.repeats}: {wall:.1f} s, {rate:,.0f} events/s",
                file=sys.stderr,
            )
        wall = statistics.median(walls)
        results[procs] = {
            "events": n_events,
            "startup_s": round(startup, 2),
            "median_wall_s": round(wall, 2),
            "median_events_per_s": round(n_events / max(wall - startup, 1e-9)),
            "median_peak_rss_mib": round(statistics.median(peaks) / 1024, 1),
        }
    print(f"\n{'processes':>9} {'events':>9} {'wall s':>7} {'start-up s':>10} {'events/s':>10} {'peak RSS MiB':>12}")
    for procs, r in results.items():
        print(
            f"{procs:>9} {r['events']:>9} {r['median_wall_s']:>7} {r['startup_s']:>10} "
            f"{r['median_events_per_s']:>10,} {r['median_peak_rss_mib']:>12}"
        )
    if len(counts) > 1:
        base = results[counts[0]]["median_events_per_s"]
        for procs in counts[1:]:
            print(f"speed-up {procs} vs {counts[0]} processes: {results[procs]['median_events_per_s'] / base:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
