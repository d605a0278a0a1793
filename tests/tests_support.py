"""Helpers shared by the tests (importable as ``tests_support``)."""

from __future__ import annotations

from pathlib import Path

from loadtest.kill_harness import query
from loadtest.measure import process_tree

__all__ = ["alive", "descendants", "query"]
"""``query(dsn, sql)``: ClickHouse rows read from a child process, because chDB lets one
process hold one data path at a time and the test process may hold another."""


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, children of children included (``loadtest.measure.process_tree``)."""
    return set(process_tree(pid)) - {pid}


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (exists and is not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
