"""Helpers shared by the tests (importable as ``tests_support``)."""

from __future__ import annotations

from loadtest.kill_harness import query

__all__ = ["query"]
"""``query(dsn, sql)``: ClickHouse rows read from a child process, because chDB lets one
process hold one data path at a time and the test process may hold another."""
