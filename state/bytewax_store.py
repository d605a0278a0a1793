"""Reading Bytewax's recovery partitions while flows write them.

>>> import tempfile; from pathlib import Path; from bytewax.recovery import init_db_dir
>>> d = Path(tempfile.mkdtemp()); init_db_dir(d, 1)
>>> with open_lock_free(d / "part-0.sqlite3") as db: db.execute("SELECT count(*) FROM snaps").fetchone()
(0,)
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager, closing
from pathlib import Path


def open_lock_free(part: Path) -> AbstractContextManager[sqlite3.Connection]:
    """A read-only connection to one partition, closed on exit: no locks, no write-ahead log (``immutable=1``).

    Mapping the ``-shm`` file of a partition another process writes crashed flows
    with SIGBUS. This view is the store as of its last checkpoint: rows deleted
    since still show, rows added since do not, so a reader that takes a minimum
    (the oldest mark, the oldest position a resume may need) errs on the safe side.
    A read during a checkpoint may fail (``sqlite3.Error``): the caller retries later.
    """
    return closing(sqlite3.connect(f"{Path(part).resolve().as_uri()}?mode=ro&immutable=1", uri=True))
