"""What a recovery store holds: every key's newest state, from Bytewax's rows and the shard files.

Bytewax keeps one row per (step, key, epoch) in ``part-N.sqlite3``; a sharded
step (``operators.sharded``) keeps there only a ``ShardMark`` per shard (the
keys' states are in ``shards/<step id>/<shard>.sqlite3`` at that version) or a
``ShardInline`` (the states themselves). ``live_states`` unfolds both, so tools
and tests see keys, not shards. Read-only: safe while the flow runs.

>>> import tempfile; from bytewax.recovery import init_db_dir
>>> d = Path(tempfile.mkdtemp()); init_db_dir(d, 1)
>>> list(live_states(d))
[]
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from state.bytewax_store import open_current_copy
from state.shard_store import ShardInline, ShardMark, read_states

SHARDS_DIR = "shards"


@dataclass(frozen=True, slots=True)
class LiveState:
    step_id: str
    """The full stateful step id (``creditflow.attribute.journey``)."""
    key: str
    """The state key (a person, device, network or conversion key), not the shard."""
    state: Any
    shard: str | None
    """The shard holding it, for sharded steps."""


def newest_rows(recovery_dir: Path) -> dict[tuple[str, str], tuple[int, bytes | None]]:
    """``(step_id, state_key) -> (epoch, pickled snapshot or None)`` of each key's newest Bytewax row."""
    newest: dict[tuple[str, str], tuple[int, bytes | None]] = {}
    for part in sorted(Path(recovery_dir).glob("part-*.sqlite3")):
        with open_current_copy(part) as db:
            for step, key, epoch, blob in db.execute("SELECT step_id, state_key, snap_epoch, ser_change FROM snaps"):
                if (step, key) not in newest or epoch > newest[(step, key)][0]:
                    newest[(step, key)] = (epoch, blob)
    return newest


def live_states(recovery_dir: Path, step_id: str | None = None) -> Iterator[LiveState]:
    """Every key holding state in the newest snapshots (of ``step_id`` only, if given)."""
    for (step, key), (_epoch, blob) in newest_rows(recovery_dir).items():
        if blob is None or (step_id is not None and step != step_id):
            continue
        state = pickle.loads(blob)
        if isinstance(state, ShardInline):
            for inner, inner_state in state.states.items():
                yield LiveState(step, inner, inner_state, key)
        elif isinstance(state, ShardMark):
            path = shard_file(recovery_dir, step, key)
            if path.exists():
                for inner, inner_state in read_states(path, state.version).items():
                    yield LiveState(step, inner, inner_state, key)
        else:
            yield LiveState(step, key, state, None)


def shard_file(recovery_dir: Path, step_id: str, shard: str) -> Path:
    """Where a sharded step keeps one shard's rows (``operators.sharded.ShardedState``)."""
    return Path(recovery_dir) / SHARDS_DIR / step_id / f"{shard}.sqlite3"


def shard_files(recovery_dir: Path) -> Iterator[tuple[str, Path]]:
    """``(step_id, path)`` of every shard file in the store."""
    for step_dir in sorted((Path(recovery_dir) / SHARDS_DIR).glob("*")):
        for path in sorted(step_dir.glob("*.sqlite3")):
            yield step_dir.name, path
