"""state/bytewax_store: a private copy of a partition, as it is now, while another connection writes it."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from state import bytewax_store
from state.bytewax_store import COPY_ATTEMPTS, open_current_copy


@pytest.fixture()
def writer(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A WAL-mode database that never checkpoints on its own: every commit stays in the log, as in a live flow."""
    db = sqlite3.connect(tmp_path / "part-0.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE fronts (worker INTEGER PRIMARY KEY, epoch INTEGER)")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    yield db
    db.close()


def part(db: sqlite3.Connection) -> Path:
    return Path(db.execute("PRAGMA database_list").fetchone()[2])


def fronts(path: Path) -> list[tuple[int, int]]:
    with open_current_copy(path) as db:
        return db.execute("SELECT worker, epoch FROM fronts ORDER BY worker").fetchall()


def test_reads_what_is_committed_in_the_log_and_leaves_the_live_files_alone(writer: sqlite3.Connection) -> None:
    path = part(writer)
    writer.execute("INSERT INTO fronts VALUES (0, 7), (1, 9)")
    live = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.parent.iterdir())

    assert fronts(path) == [(0, 7), (1, 9)]
    with sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True) as stale:  # the main file alone
        assert stale.execute("SELECT count(*) FROM fronts").fetchone() == (0,)
    assert sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.parent.iterdir()) == live


def test_a_log_restarted_while_copied_is_copied_again(
    writer: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = part(writer)
    writer.execute("INSERT INTO fronts VALUES (0, 1)")
    restarts = []
    real_copy = shutil.copyfile

    def copy_then_restart_the_log(src: Path, dst: Path) -> Path:
        copied = real_copy(src, dst)
        if Path(src) == path and len(restarts) < 1:  # between the main file and the log: a checkpoint + new write
            writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            writer.execute("INSERT OR REPLACE INTO fronts VALUES (0, 2)")
            restarts.append(1)
        return copied

    monkeypatch.setattr(bytewax_store.shutil, "copyfile", copy_then_restart_the_log)
    assert fronts(path) == [(0, 2)]
    assert restarts == [1]


def test_a_log_that_keeps_restarting_is_an_error_to_retry_later(
    writer: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = part(writer)
    writer.execute("INSERT INTO fronts VALUES (0, 1)")
    real_copy = shutil.copyfile
    epochs = iter(range(2, 100))

    def copy_then_restart_the_log(src: Path, dst: Path) -> Path:
        copied = real_copy(src, dst)
        if Path(src) == path:
            writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            writer.execute("INSERT OR REPLACE INTO fronts VALUES (0, ?)", (next(epochs),))
        return copied

    monkeypatch.setattr(bytewax_store.shutil, "copyfile", copy_then_restart_the_log)
    with pytest.raises(sqlite3.OperationalError, match=f"changed while being copied {COPY_ATTEMPTS} times"):
        fronts(path)


def test_a_transaction_half_written_when_copied_is_not_seen(
    writer: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = part(writer)
    writer.execute("INSERT INTO fronts VALUES (0, 1)")
    writer.execute("INSERT OR REPLACE INTO fronts VALUES (0, 2)")
    real_copy = shutil.copyfile

    def copy_a_torn_log(src: Path, dst: Path) -> Path:
        copied = real_copy(src, dst)
        if Path(src).name.endswith("-wal"):  # the last frame only partly written
            with open(dst, "r+b") as f:
                f.truncate(Path(dst).stat().st_size - 100)
        return copied

    monkeypatch.setattr(bytewax_store.shutil, "copyfile", copy_a_torn_log)
    assert fronts(path) == [(0, 1)]
