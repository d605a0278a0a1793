"""Helpers shared by the tests (importable as ``tests_support``)."""

from __future__ import annotations

from pathlib import Path

from loadtest.kill_harness import query

__all__ = ["alive", "descendants", "query"]
"""``query(dsn, sql)``: ClickHouse rows read from a child process, because chDB lets one
process hold one data path at a time and the test process may hold another."""


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (read from /proc), children of children included."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent_of[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parent_of.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (exists and is not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
