"""Right to be forgotten in ClickHouse: deleting a person's rows, and reading the suppression list back.

Why this module: a ``deletion_request`` must remove what ClickHouse holds about a
person - their ``attribution_credits`` and ``conversions`` rows (``person_id`` is
the person key ``u:``/``d:``/``a:`` + id) and the ``dead_letters`` whose raw
payload names them - and must keep them removed: ``forgotten_ids`` stores the
keys' hashes (``creditflow.forgotten``), every run loads it
(:func:`load_forgotten`) to suppress the person's events, and the
``creditflow forget`` sweep (:func:`sweep_clickhouse`) deletes rows of listed
keys that reached the tables anyway (a late replay, a backfill). The sink
(``sinks.clickhouse``) and the sweep share one deletion, :func:`erase_persons`.

The person id never goes into a DELETE. A DELETE run as a mutation (the
fallback below) keeps its predicate's text (``system.mutations``, and
``mutation_N.txt`` in the table's data directory, until
``finished_mutations_to_keep`` newer ones push it out), and a patch part keeps
the matched rows' sort keys, so :func:`erase_persons`
first finds the rows' keys with a ``SELECT`` that binds the ids as query
parameters (the SELECT's text is not stored: chDB has no ``system.query_log``;
a server logs queries unless ``log_queries=0``), then deletes by key: credits
and conversions by ``(conversion_id, conversion_ts)`` - the conversion time
keeps another person's conversion that reuses the id at another time - and dead
letters by their ORDER BY key ``(source, partition, position, reason)``, all
within the tenant.

How a DELETE runs: as a patch part. With ``PATCH_DELETE``
(``lightweight_delete_mode='lightweight_update_force'``) and the table settings
``enable_block_number_column``/``enable_block_offset_column`` (migration
``0008_fast_deletes``), the DELETE writes one small patch part per partition it
touches - for each matched row the table's sort key (row keys: never a person
id), ``_part``, ``_block_number``, ``_block_offset`` and ``_row_exists = 0`` -
and creates no mutation (``system.mutations`` and the data directory get no
text). Every later SELECT applies the patch: with or without FINAL, the views
``attribution_credits_latest``/``conversions_latest`` and the sink's replay
key lookups no longer see the rows. A row inserted later with the same key
stays visible (the patch names the old rows' block numbers), and insert
deduplication tokens act as before (a block whose token is still in the
window is dropped). Merges apply
patches (``apply_patches_on_merge``), and a patch part is removed once every
part it targets has merged.

Fallback: a server that refuses ``PATCH_DELETE`` before doing anything - it
does not know the setting (UNKNOWN_SETTING: no lightweight updates), the table
lacks the block columns (SUPPORT_IS_DISABLED: 0008 was skipped on an older
server), or lightweight updates are off - gets the same DELETE without it, and
the choice is remembered for that client and table (one warning). That runs as
before as a synchronous mutation ``UPDATE _row_exists = 0 WHERE <key
predicate>`` (``lightweight_deletes_sync=2``) that writes a new version of the
mask column of every active part; its text is kept in ``system.mutations`` and
``mutation_N.txt`` (hence keys only).

Either way the rows' bytes stay in their parts until those parts next merge;
a partition that no longer merges (an old month) keeps them until forced:
``OPTIMIZE TABLE t FINAL``, or ``ALTER TABLE t APPLY PATCHES`` then ``APPLY
DELETED MASK`` (APPLY DELETED MASK alone ignores patches). Replaced parts are
dropped after ``old_parts_lifetime`` (0 in chDB, 8 min on a server by default).

Cost (chDB 26.9, 2 shared cores, busy machine; 200k credits in 16 monthly
parts, 40k conversions, 20k dead letters): erasing one person took 54-92 ms
with patch parts (a DELETE 6-25 ms) against 2.3-5.1 s with mutations (a
credits or conversions DELETE 0.9-2.9 s, 1.3-2.3 s when nothing matches);
1,000 persons 0.27 s against 4.3-5.2 s. Reads pay a little while patches are
unapplied. The sink still erases
all of an epoch's persons of a tenant with one SELECT and at most one DELETE
per table, and skips the DELETE when the SELECT found nothing.

Bound: :func:`erase_persons` holds the found keys of the given persons;
:func:`sweep_clickhouse` holds one tenant's distinct person ids (credits,
conversions, dead-letter ids) at a time.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from creditflow.forgotten import FORGET_TABLES, ForgetPerson, ForgottenIds
from sinks.clickhouse_client import (
    ClickHouseSettings,
    describe_error,
    run_call,
)

__all__ = [
    "ERASED_TABLES",
    "FORGET_CHUNK",
    "NO_PATCH_DELETE_CODES",
    "PATCH_DELETE",
    "delete_once",
    "erase_persons",
    "load_forgotten",
    "sweep_clickhouse",
]

logger = logging.getLogger("creditflow.sinks.clickhouse")

T = TypeVar("T")

ERASED_TABLES: tuple[str, ...] = tuple(t for t in FORGET_TABLES if t != ForgetPerson.table)
"""The tables a person's rows are deleted from: attribution_credits, conversions, dead_letters."""

FORGET_CHUNK = 10_000
"""Most ids or keys bound in one SELECT or DELETE (bounds the statement size)."""

PATCH_DELETE: dict[str, Any] = {"lightweight_delete_mode": "lightweight_update_force"}
"""Query settings of a DELETE written as a patch part; where that is impossible the server refuses it."""

NO_PATCH_DELETE_CODES: frozenset[int] = frozenset(
    {
        36,  # BAD_ARGUMENTS: a server without this lightweight_delete_mode value
        48,  # NOT_IMPLEMENTED
        115,  # UNKNOWN_SETTING: a server without lightweight_delete_mode
        344,  # SUPPORT_IS_DISABLED: table without _block_number/_block_offset, or lightweight updates off
    }
)
"""Errors by which a server refuses ``PATCH_DELETE`` before deleting anything: delete by mutation instead."""

_by_mutation: WeakKeyDictionary[Client, set[str]] = WeakKeyDictionary()
"""Per client, the tables whose server refused ``PATCH_DELETE``; bound: the tables the sinks write."""

ID_FIELDS: dict[str, str] = {"u:": "user_id", "d:": "device_id", "a:": "anonymous_id"}
"""Person key prefix -> the top-level field of a raw event (``dead_letters.raw``) holding the id."""

_BY_CONVERSION_SELECT = (
    "SELECT person_id, conversion_id, toUnixTimestamp64Milli(conversion_ts), count() FROM {table:Identifier} "
    "WHERE tenant_id = {tenant:String} AND person_id IN {keys:Array(String)} "
    "GROUP BY person_id, conversion_id, conversion_ts"
)
_BY_CONVERSION_DELETE = (
    "DELETE FROM {table:Identifier} WHERE tenant_id = {tenant:String} "
    "AND (conversion_id, toUnixTimestamp64Milli(conversion_ts)) IN {targets:Array(Tuple(String, Int64))}"
)
_JSON_IDS = ", ".join(f"JSONExtractString(raw, '{f}')" for f in ID_FIELDS.values())
_DEAD_LETTER_SELECT = (
    f"SELECT `source`, `partition`, `position`, toString(`reason`), {_JSON_IDS} FROM dead_letters "
    "WHERE tenant_id = {tenant:String} AND ("
    + " OR ".join(f"JSONExtractString(raw, '{f}') IN {{{f}:Array(String)}}" for f in ID_FIELDS.values())
    + ")"
)
_DEAD_LETTER_DELETE = (
    "DELETE FROM dead_letters WHERE tenant_id = {tenant:String} "
    "AND (`source`, `partition`, `position`, `reason`) IN {targets:Array(Tuple(String, String, String, String))}"
)


def _query(
    client: Client, sql: str, parameters: dict[str, Any], *, what: str, settings: ClickHouseSettings | None
) -> list[tuple[Any, ...]]:
    result = run_call(partial(client.query, sql, parameters=parameters), what=what, settings=settings)
    return [tuple(r) for r in result.result_rows]


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), FORGET_CHUNK):
        yield items[start : start + FORGET_CHUNK]


def delete_once(client: Client, sql: str, table: str, parameters: dict[str, Any]) -> None:
    """One DELETE: as a patch part, or as a mutation where the server refused that (remembered per client)."""
    refused = _by_mutation.setdefault(client, set())
    if table not in refused:
        try:
            client.command(sql, parameters=parameters, settings=PATCH_DELETE)
            return
        except DatabaseError as exc:
            if getattr(exc, "code", None) not in NO_PATCH_DELETE_CODES:
                raise
            refused.add(table)
            logger.warning(
                "ClickHouse table %s cannot delete by patch part (%s): its erasures and retention deletes run "
                "as mutations, which rewrite every part (seconds on large tables) -> fix: a ClickHouse with "
                "lightweight updates and the migrations 0008_fast_deletes and 0009_retention_deletes (applied at "
                "the sink's next start)",
                table,
                describe_error(exc),
            )
    client.command(sql, parameters=parameters)


def _delete(
    client: Client,
    sql: str,
    table: str,
    tenant_id: str,
    targets: Sequence[tuple[Any, ...]],
    *,
    settings: ClickHouseSettings | None,
) -> None:
    """Lightweight-DELETE ``targets`` (row keys, never a person id) of ``tenant_id`` from ``table``."""
    for chunk in _chunks(sorted(targets)):
        parameters = {"table": table, "tenant": tenant_id, "targets": list(chunk)}
        run_call(
            partial(delete_once, client, sql, table, parameters),
            what=f"deleting {len(chunk)} forgotten rows' keys from ClickHouse table {table}",
            settings=settings,
        )


def erase_persons(
    client: Client,
    tenant_id: str,
    persons: Mapping[str, str],
    *,
    settings: ClickHouseSettings | None = None,
) -> dict[str, int]:
    """Delete every row of ``persons`` of ``tenant_id`` from ``ERASED_TABLES``; rows deleted per table.

    ``persons`` maps each person key (``u:``/``d:``/``a:`` + id) to its ``forget_hash``,
    which the log names instead of the key: one info line per person with its
    rows deleted per table. The ids are bound only in SELECTs; the DELETEs name
    row keys (module docstring). ``settings`` retries transient errors like
    the sink; without, one attempt. Harmless to repeat: a second run finds nothing.
    """
    started = time.monotonic()
    keys = sorted(persons)
    per_person: dict[str, Counter[str]] = {key: Counter() for key in keys}
    deleted = dict.fromkeys(ERASED_TABLES, 0)
    for table in ("attribution_credits", "conversions"):
        targets: set[tuple[str, int]] = set()
        for chunk in _chunks(keys):
            rows = _query(
                client,
                _BY_CONVERSION_SELECT,
                {"table": table, "tenant": tenant_id, "keys": list(chunk)},
                what=f"finding the forgotten persons' rows in ClickHouse table {table}",
                settings=settings,
            )
            for person_id, conversion_id, conversion_ts_ms, n in rows:
                targets.add((conversion_id, int(conversion_ts_ms)))
                per_person[person_id][table] += int(n)
                deleted[table] += int(n)
        if targets:
            _delete(client, _BY_CONVERSION_DELETE, table, tenant_id, sorted(targets), settings=settings)

    ids: dict[str, list[str]] = {field: [] for field in ID_FIELDS.values()}
    owner: dict[tuple[str, str], str] = {}  # (field, raw id) -> person key
    for key in keys:
        field = ID_FIELDS.get(key[:2])
        raw_id = key[2:]  # creditflow.forgotten.raw_id_of
        if field is None or not raw_id:  # an empty id would match every dead letter without that field
            continue
        ids[field].append(raw_id)
        owner[(field, raw_id)] = key
    letters: set[tuple[str, str, str, str]] = set()
    id_lists = [sorted(v) for v in ids.values()]
    longest = max(map(len, id_lists))
    for start in range(0, longest, FORGET_CHUNK):
        parameters: dict[str, Any] = {"tenant": tenant_id}
        for field, values in zip(ID_FIELDS.values(), id_lists, strict=True):
            parameters[field] = values[start : start + FORGET_CHUNK]
        rows = _query(
            client,
            _DEAD_LETTER_SELECT,
            parameters,
            what="finding the forgotten persons' rows in ClickHouse table dead_letters",
            settings=settings,
        )
        for source, partition, position, reason, *named in rows:
            key4 = (source, partition, position, reason)
            if key4 in letters:
                continue
            letters.add(key4)
            for field, value in zip(ID_FIELDS.values(), named, strict=True):
                person = owner.get((field, value))
                if person is not None:
                    per_person[person]["dead_letters"] += 1
                    break
    deleted["dead_letters"] = len(letters)
    if letters:
        _delete(client, _DEAD_LETTER_DELETE, "dead_letters", tenant_id, sorted(letters), settings=settings)

    for key in keys:
        counts = per_person[key]
        logger.info(
            "forgot person %s of tenant %r: deleted %s rows",
            persons[key],
            tenant_id,
            ", ".join(f"{counts[t]} {t}" for t in ERASED_TABLES),
        )
    if keys:
        logger.info(
            "erased %d persons of tenant %r from ClickHouse in %.3f s: %s",
            len(keys),
            tenant_id,
            time.monotonic() - started,
            deleted,
        )
    return deleted


def load_forgotten(client: Client, *, settings: ClickHouseSettings | None = None) -> list[tuple[str, str]]:
    """Every ``(tenant_id, id_hash)`` of ``forgotten_ids``; ``[]`` while the table does not exist yet.

    A run loads this at start into a ``creditflow.forgotten.ForgottenIds``.
    """
    table = ForgetPerson.table
    exists = run_call(
        lambda: client.command("EXISTS TABLE {table:Identifier}", parameters={"table": table}),
        what=f"checking for ClickHouse table {table}",
        settings=settings,
    )
    if str(exists).strip() != "1":
        return []
    rows = _query(
        client,
        "SELECT DISTINCT tenant_id, id_hash FROM {table:Identifier} ORDER BY tenant_id, id_hash",
        {"table": table},
        what=f"reading the suppression list from ClickHouse table {table}",
        settings=settings,
    )
    return [(str(tenant_id), str(id_hash)) for tenant_id, id_hash in rows]


def sweep_clickhouse(
    client: Client, forgotten: ForgottenIds, *, settings: ClickHouseSettings | None = None
) -> dict[str, int]:
    """Delete the rows of every listed person still in ClickHouse; rows deleted per table (``ERASED_TABLES``).

    The backstop of ``creditflow forget``: per tenant with hashes, the distinct
    ``person_id`` of credits and conversions and the user/device/anonymous ids
    of its dead letters' raw JSON are hashed with ``forgotten.hash_of``; the keys
    whose hash is listed are erased with :func:`erase_persons`.
    """
    totals = dict.fromkeys(ERASED_TABLES, 0)
    for tenant_id in forgotten.tenants():
        candidates: set[str] = set()
        for table in ("attribution_credits", "conversions"):
            rows = _query(
                client,
                "SELECT DISTINCT person_id FROM {table:Identifier} WHERE tenant_id = {tenant:String}",
                {"table": table, "tenant": tenant_id},
                what=f"reading the persons of ClickHouse table {table}",
                settings=settings,
            )
            candidates.update(str(r[0]) for r in rows)
        rows = _query(
            client,
            f"SELECT DISTINCT {_JSON_IDS} FROM dead_letters WHERE tenant_id = {{tenant:String}}",
            {"tenant": tenant_id},
            what="reading the persons named by ClickHouse table dead_letters",
            settings=settings,
        )
        for named in rows:
            for prefix, value in zip(ID_FIELDS, named, strict=True):
                if value:
                    candidates.add(prefix + str(value))
        matched: dict[str, str] = {}
        for key in candidates:
            id_hash = forgotten.hash_of(tenant_id, key)
            if forgotten.has_hash(tenant_id, id_hash):
                matched[key] = id_hash
        if not matched:
            continue
        for table, n in erase_persons(client, tenant_id, matched, settings=settings).items():
            totals[table] += n
    logger.info("swept ClickHouse for forgotten persons: deleted %s rows", totals)
    return totals
