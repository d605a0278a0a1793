"""Versioned ClickHouse DDL: numbered SQL files applied once, in order.

Migrations live in ``sinks/migrations/NNNN_name.sql`` (shipped as package data).
A file holds one or more statements, each ending with ``;`` at the end of a line;
lines starting with ``--`` are comments. ``schema_migrations(version, name,
applied_at)`` records every applied file; :func:`migrate` applies the missing
ones in version order and returns their versions, so a second run applies
nothing.

ClickHouse DDL is not transactional: a file is recorded only after all of its
statements succeeded, so a crash in the middle re-runs the whole file next
time. Every statement must therefore be idempotent (``CREATE TABLE IF NOT
EXISTS``, ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``). Never edit an applied
file; add the next number instead. Two processes migrating at once both apply
the (idempotent) statements; ``schema_migrations`` is a ReplacingMergeTree on
``version`` and is read with ``DISTINCT``, so that is harmless.

A file may name errors to tolerate, in a comment line ``-- tolerate: NAME[, NAME]``
(ClickHouse error names, e.g. ``UNKNOWN_SETTING``): a statement failing with one
of them is skipped with a warning, the file's other statements still run, and
the file is not recorded, so it is tried again at the next start (after a
server upgrade it applies). Only for optional statements (0008: settings an
older server does not know).

>>> split_statements("-- a comment\\nCREATE TABLE a (x UInt8) ENGINE = Memory;\\n\\nSELECT 1;\\n")
['CREATE TABLE a (x UInt8) ENGINE = Memory', 'SELECT 1']
>>> [m.version for m in load_migrations()][:1]
[1]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clickhouse_connect.driver import Client

from sinks.clickhouse_client import ClickHouseSinkError, describe_error, is_transient

__all__ = ["MIGRATIONS_TABLE", "Migration", "applied_versions", "load_migrations", "migrate", "split_statements"]

logger = logging.getLogger("creditflow.sinks.clickhouse")

MIGRATIONS_TABLE = "schema_migrations"

_CREATE_MIGRATIONS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}
(
    version     UInt32,
    name        String,
    applied_at  DateTime64(3)
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""

_FILE_RE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")
_STATEMENT_END_RE = re.compile(r";[ \t]*(?:\n|\Z)")
_TOLERATE_RE = re.compile(r"^[ \t]*--[ \t]*tolerate:[ \t]*([A-Z0-9_, \t]+?)[ \t]*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version, name (file stem), statements and where it was read from."""

    version: int
    name: str
    statements: tuple[str, ...]
    file: str = ""
    """The file's path (or its place in the installed package), for error messages."""
    tolerate: frozenset[str] = frozenset()
    """ClickHouse error names (``-- tolerate:`` lines) whose failing statements are skipped, the file unrecorded."""


def split_statements(sql: str) -> list[str]:
    """Split a migration file into statements: ``;`` at a line end separates them."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [part.strip() for part in _STATEMENT_END_RE.split(body) if part.strip()]


def _files(directory: Path | None) -> Iterable[tuple[str, str, str]]:
    """``(file name, text, location)`` of each ``.sql`` file, by name."""
    if directory is not None:
        try:
            paths = sorted(Path(directory).iterdir())
        except OSError as exc:
            raise ClickHouseSinkError(
                f"cannot read the migrations directory {str(directory)!r}: {exc} -> fix: point "
                "ClickHouseSettings.migrations_dir at a readable directory of NNNN_name.sql files"
            ) from exc
        for path in paths:
            if path.suffix == ".sql":
                yield path.name, path.read_text(encoding="utf-8"), str(path)
        return
    root = resources.files("sinks").joinpath("migrations")
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            yield entry.name, entry.read_text(encoding="utf-8"), f"sinks/migrations/{entry.name}"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """The migrations in ``directory`` (default: the packaged ``sinks/migrations``), by version.

    Raises :class:`ClickHouseSinkError` for a badly named file, a duplicate
    version or a file without statements.
    """
    found: dict[int, Migration] = {}
    for filename, text, location in _files(directory):
        match = _FILE_RE.match(filename)
        if not match:
            raise ClickHouseSinkError(
                f"migration file {filename!r} is badly named: use NNNN_name.sql (four digits, e.g. 0002_add_index.sql)"
            )
        version = int(match.group(1))
        if version in found:
            raise ClickHouseSinkError(
                f"migration version {version} is used twice ({found[version].name}, {filename}): renumber one"
            )
        statements = tuple(split_statements(text))
        if not statements:
            raise ClickHouseSinkError(f"migration {filename} has no statements: end each statement with ';'")
        tolerate = frozenset(
            name.strip() for line in _TOLERATE_RE.findall(text) for name in line.split(",") if name.strip()
        )
        found[version] = Migration(version, filename.removesuffix(".sql"), statements, location, tolerate)
    return [found[v] for v in sorted(found)]


def applied_versions(client: Client) -> set[int]:
    """Versions recorded in ``schema_migrations`` (creating that table if missing)."""
    client.command(_CREATE_MIGRATIONS_TABLE)
    result = client.query(f"SELECT DISTINCT version FROM {MIGRATIONS_TABLE}")
    return {int(row[0]) for row in result.result_rows}


def migrate(client: Client, directory: Path | None = None) -> list[int]:
    """Apply the migrations not yet recorded, in version order; return their versions.

    Idempotent: a second run returns ``[]``. A statement failing with an error
    its file tolerates is skipped and that file left unrecorded (module
    docstring); it is not in the result. Any other failing statement raises
    :class:`ClickHouseSinkError` naming the migration file, the statement's
    start and the fix; it is ``transient`` only when retrying may help (the
    server was unreachable or overloaded), never for bad SQL.
    """
    migrations = load_migrations(directory)
    done = applied_versions(client)
    applied: list[int] = []
    for migration in migrations:
        if migration.version in done:
            continue
        skipped = False
        for statement in migration.statements:
            try:
                client.command(statement)
            except Exception as exc:
                head = " ".join(statement.split())[:80]
                if any(f"({name})" in str(exc) for name in migration.tolerate):
                    logger.warning(
                        "ClickHouse migration %s: skipped statement %r, which this server refused with an "
                        "error the file tolerates: %s; the migration stays unrecorded and is tried again "
                        "at the next start",
                        migration.name,
                        head,
                        describe_error(exc),
                    )
                    skipped = True
                    continue
                transient = is_transient(exc)
                advice = (
                    ""
                    if transient
                    else f" -> the migration was not recorded: fix or replace the file {migration.file} "
                    "(an applied file must never be edited; statements must be idempotent) and restart"
                )
                raise ClickHouseSinkError(
                    f"migration {migration.name} ({migration.file}) failed on statement {head!r}: "
                    f"{describe_error(exc)}{advice}",
                    transient=transient,
                ) from exc
        if skipped:
            continue
        client.command(
            f"INSERT INTO {MIGRATIONS_TABLE} (version, name, applied_at) "
            "VALUES ({version:UInt32}, {name:String}, now64(3))",
            parameters={"version": migration.version, "name": migration.name},
        )
        logger.info("applied ClickHouse migration %s", migration.name)
        applied.append(migration.version)
    return applied
