"""Reading Bytewax's recovery partitions while flows write them.

>>> import tempfile; from pathlib import Path; from bytewax.recovery import init_db_dir
>>> d = Path(tempfile.mkdtemp()); init_db_dir(d, 1)
>>> with open_current_copy(d / "part-0.sqlite3") as db: db.execute("SELECT count(*) FROM snaps").fetchone()
(0,)
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

COPY_ATTEMPTS = 3
"""Copies of a partition tried before a read gives up (the caller retries later)."""
_WAL_HEADER_BYTES = 32
_WAL_GENERATION = slice(12, 24)
"""Checkpoint sequence number and salts of a WAL header: they change whenever the log restarts."""


def _wal_generation(wal: Path) -> bytes | None:
    try:
        with wal.open("rb") as f:
            header = f.read(_WAL_HEADER_BYTES)
    except FileNotFoundError:
        return None
    return header[_WAL_GENERATION] if len(header) == _WAL_HEADER_BYTES else None


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@contextmanager
def open_current_copy(part: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a private copy of one partition as it is now, closed and deleted on exit.

    The partition's main file and write-ahead log are copied, never opened by
    SQLite: mapping the ``-shm`` file of a partition another process writes
    crashed flows with SIGBUS, and an ``immutable=1`` read sees only what the
    last checkpoint moved into the main file (Bytewax checkpoints every ~4 MB of
    log, so a quiet or often-killed flow showed readers nothing for many minutes).

    The copy is consistent when the log did not restart while it was taken
    (same checkpoint sequence and salts before and after, main file unchanged):
    a checkpoint only copies pages the log still holds, and a frame being
    written when copied fails its checksum, so SQLite's recovery of the copy
    stops at the last whole transaction. Otherwise the copy is retried, at most
    ``COPY_ATTEMPTS`` times, then ``sqlite3.OperationalError`` (retry later).
    """
    part = Path(part)
    wal = part.with_name(part.name + "-wal")
    with tempfile.TemporaryDirectory(prefix="creditflow-bytewax-") as tmp:
        copy = Path(tmp) / part.name
        copy_wal = copy.with_name(copy.name + "-wal")
        for _ in range(COPY_ATTEMPTS):
            copy_wal.unlink(missing_ok=True)
            try:
                before = (_stamp(part), _wal_generation(wal))
                shutil.copyfile(part, copy)
                if before[1] is not None:
                    shutil.copyfile(wal, copy_wal)
                after = (_stamp(part), _wal_generation(copy_wal))
            except FileNotFoundError:  # the log was deleted by a closing writer: copy again
                continue
            if before == after:
                with closing(sqlite3.connect(copy)) as db:
                    yield db
                return
        raise sqlite3.OperationalError(f"{part} changed while being copied {COPY_ATTEMPTS} times; read it again later")
