"""Fuzz-suite plumbing: a session counter of the cases tried, printed at the end of the run.

Tests take the ``fuzz_stats`` fixture (a ``Counter`` keyed by category) and add one per
case they try; ``pytest_terminal_summary`` prints the counts and one summary line.
"""

from __future__ import annotations

from collections import Counter

import pytest

FUZZ_STATS = pytest.StashKey[Counter[str]]()


@pytest.fixture(scope="session")
def fuzz_stats(request: pytest.FixtureRequest) -> Counter[str]:
    """Cases tried per category, for the whole session (session-scoped, so hypothesis-safe)."""
    return request.config.stash.setdefault(FUZZ_STATS, Counter())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    stats = config.stash.get(FUZZ_STATS, None)
    if not stats:
        return
    terminalreporter.write_sep("-", "fuzz cases tried per category")
    width = max(len(k) for k in stats)
    for category, n in sorted(stats.items()):
        terminalreporter.write_line(f"  {category:<{width}}  {n:>6}")
    decode_total = sum(n for k, n in stats.items() if k.startswith("decode."))
    flow_runs = sum(n for k, n in stats.items() if k.startswith("flow.") and k.endswith(".runs"))
    flow_bad = sum(n for k, n in stats.items() if k.startswith("flow.bad."))
    terminalreporter.write_line(
        f"fuzz summary: {decode_total} decode cases in "
        f"{sum(1 for k in stats if k.startswith('decode.'))} categories, "
        f"{flow_runs} flow examples, {flow_bad} bad records interleaved into them"
    )
