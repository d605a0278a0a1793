"""Benchmark: machine instructions per event of the flow's own logic, this tree against another.

``loadtest.flow_cpu`` times the flow in wall-clock seconds, and on a shared
machine those move by 10-20% from one minute to the next (neighbours, the
calibration loop itself varies 0.5-1.0 s within an hour), so a change worth
2% cannot be seen. Instructions executed do not depend on the neighbours:
this runs the same flow (``loadtest.flow_cpu``'s traffic, one worker,
in-memory source and sink, epochs that never close so nothing depends on the
clock) under Valgrind's ``cachegrind`` (``--cache-sim=no``: counting only)
and prints instructions per event, for this tree and for ``--against`` (a
directory holding another checkout, or a git revision checked out into a
temporary worktree), each as the whole process minus the same process that
stops before running the flow. Two identical trees agree within ~0.1%.

    python -m loadtest.flow_instructions --events 10000 --against HEAD~1 [--json out.json]

Needs ``valgrind`` (Debian package ``valgrind``); a run of 10,000 events
takes about 40 s per tree (the trees run side by side, one per core).

>>> instructions_of("==1== I   refs:      7,747,273,326\\n")
7747273326
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_RUNNER = """
import pickle, sys
from datetime import timedelta
sys.path.insert(0, sys.argv[1])
from bytewax.testing import TestingSink, TestingSource, run_main
from flows.attribution import FlowSettings, build_flow
from flows.gc_policy import tune_gc
from loadtest.flow_cpu import READ_BATCH
records = pickle.load(open(sys.argv[2], "rb"))
flow = build_flow(TestingSource(records, batch_size=READ_BATCH), TestingSink([]), FlowSettings())
tune_gc()
if sys.argv[3] == "run":
    run_main(flow, epoch_interval=timedelta(days=1))
"""
"""Runs in the tree given as its first argument: builds the flow, and runs it only when asked, so the
difference of the two processes is the run alone (imports, unpickling and building cancel out)."""

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


class ValgrindMissing(RuntimeError):
    """``valgrind`` is not on PATH."""


class CheckoutFailed(RuntimeError):
    """``--against`` is neither a directory nor a revision git can check out."""


def instructions_of(report: str) -> int:
    """The instruction count in cachegrind's summary (its ``I refs`` line)."""
    found = _REFS.search(report)
    if found is None:
        raise RuntimeError(f"no 'I refs' line in valgrind's output: {report[-500:]!r}")
    return int(found.group(1).replace(",", ""))


def _count(tree: Path, records: Path, mode: str) -> int:
    """Instructions of one process running ``_RUNNER`` in ``tree`` (``mode``: ``run`` or ``build``)."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-c",
            _RUNNER,
            str(tree),
            str(records),
            mode,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the flow failed under valgrind in {tree} ({mode}): {done.stderr[-2000:]}")
    return instructions_of(done.stderr)


def per_event(tree: Path, records: Path, events: int) -> float:
    """Instructions per event of one run of the flow in ``tree`` over the pickled ``records``."""
    with ThreadPoolExecutor(max_workers=2) as pool:  # valgrind is one process each: one per core
        run, build = pool.map(lambda mode: _count(tree, records, mode), ("run", "build"))
    return (run - build) / events


def checkout(revision: str, into: Path) -> Path:
    """``revision`` of this repository checked out (detached) into ``into``; remove it with ``git worktree remove``."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(into), revision],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise CheckoutFailed(
            f"git could not check out {revision!r} ({done.stderr.strip()[-300:]}); "
            "give --against a revision of this repository (a commit, tag or branch) or a directory"
        )
    return into


def measure(events: int, against: str | None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Instructions per event here and, with ``against``, in that tree or revision, with their ratio."""
    if shutil.which("valgrind") is None:
        raise ValgrindMissing("valgrind is not installed; install the Debian package 'valgrind' and run again")
    from loadtest.flow_cpu import records

    with tempfile.TemporaryDirectory(prefix="creditflow-instructions-") as tmp:
        path = Path(tmp) / "records.pkl"
        say(f"generating {events:,} events of load-test traffic...")
        path.write_bytes(pickle.dumps(records(events)))
        result: dict[str, Any] = {"events": events}
        say(f"counting this tree ({ROOT}) under valgrind (about {events // 250} s)...")
        result["here"] = per_event(ROOT, path, events)
        say(f"  {result['here']:,.0f} instructions per event")
        if against is None:
            return result
        other = Path(against)
        worktree = None
        if not other.is_dir():
            worktree = other = checkout(against, Path(tmp) / "against")
        try:
            say(f"counting {against} under valgrind...")
            result["against"] = per_event(other, path, events)
        finally:
            if worktree is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
        result["ratio"] = result["here"] / result["against"]
        say(f"  {result['against']:,.0f} instructions per event; this tree / {against}: {result['ratio']:.4f}")
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--against", help="a directory holding another checkout, or a git revision")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        result = measure(args.events, args.against)
    except (ValgrindMissing, CheckoutFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
